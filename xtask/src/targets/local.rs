//! The `local` target: the pod's shape as local processes, so the whole loop runs (and is
//! tested and timed) without a cluster.
//!
//! - store: the configured S3 endpoint, else an embedded s3s server (`xtask local-store`, a
//!   background process; data, port and generated credentials under `.aether/local/`);
//! - "pod": the real `aether-fetcher` and, as in the pod's app container, `aether-run` (the same
//!   binary) supervising `node current/server.js` behind the app port, in one process group,
//!   sharing `<work>`; the release ConfigMap and the downward-API annotations are directories
//!   written exactly as the kubelet writes them.
//!
//! State, ports and logs live in `.aether/local/<app>/`; `down` stops the process group.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aether_artifact::podinfo::{format_annotations, write_atomic_volume};
use aether_artifact::store::{
    StoreConfig, ENV_ACCESS_KEY, ENV_BUCKET, ENV_ENDPOINT, ENV_SECRET_KEY,
};
use aether_artifact::{keys, release, AppName, Digest, FetcherEnv, Status};
use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::config::Global;
use crate::proc::{alive, kill_group, port_open, wait_until};
use crate::release::Release;
use crate::targets::{DeployOpts, PodStatus, Published, Running, Target};

pub struct Local {
    dir: PathBuf,
    global: Global,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PodState {
    pub pgid: u32,
    pub fetcher_pid: u32,
    /// `aether-run`, which owns `app_port` and runs node behind it.
    #[serde(alias = "node_pid")]
    pub runner_pid: u32,
    pub app_port: u16,
    pub fetcher_port: u16,
}

impl PodState {
    /// The local pod's name in `hot-status`, traces and messages.
    fn name(&self) -> String {
        format!("local-{}", self.fetcher_pid)
    }
}

impl Local {
    pub(super) fn new(global: &Global) -> Local {
        Local {
            dir: global.state_dir().join("local"),
            global: global.clone(),
        }
    }

    fn app_dir(&self, app: &AppName) -> PathBuf {
        self.dir.join(app.as_str())
    }

    pub fn work_dir(&self, app: &AppName) -> PathBuf {
        self.app_dir(app).join("work")
    }

    /// `aether-run`'s status file (the pod's `run` volume).
    fn run_status(&self, app: &AppName) -> PathBuf {
        self.app_dir(app)
            .join("run")
            .join(FetcherEnv::RUN_STATUS_ITEM)
    }

    /// The fetcher's status with `aether-run`'s, as the fetcher's `/status` serves it.
    pub fn status(&self, app: &AppName) -> Result<Status> {
        Ok(fetcher_status(&self.work_dir(app))?.with_runner(&self.run_status(app)))
    }

    // --- store ------------------------------------------------------------------------------

    /// The configured store, or the embedded one (started when needed).
    fn embedded_store_config(&self) -> Result<StoreConfig> {
        let layers = self.global.store_layers()?;
        if layers.endpoint.is_some() {
            return layers.finish().map_err(anyhow::Error::msg);
        }
        crate::embedded::ensure(&self.dir, None)?
            .partial()
            .or(layers)
            .finish()
            .map_err(anyhow::Error::msg)
    }

    // --- desired state ----------------------------------------------------------------------

    fn read_release(&self, app: &AppName) -> Result<Release> {
        let dir = self.app_dir(app).join("release");
        let mut data = BTreeMap::new();
        for k in release::KEYS {
            if let Ok(v) = fs::read_to_string(dir.join(k)) {
                data.insert(k.to_string(), v);
            }
        }
        Release::from_data(&data).with_context(|| format!("reading {}", dir.display()))
    }

    /// Writes the release "ConfigMap" and then the "pod annotations", in that order, as
    /// `hot-patch` does on a cluster.
    fn set_release(&self, app: &AppName, r: &Release) -> Result<()> {
        let files = r
            .to_data()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        write_atomic_volume(&self.app_dir(app).join("release"), &files)?;
        self.annotate(app, r, None)
    }

    /// The "pod annotations" as the kubelet writes them: the release, its activation time, and
    /// the release to stage (cleared by every publish, as on a cluster).
    fn annotate(&self, app: &AppName, r: &Release, stage: Option<Digest>) -> Result<()> {
        let mut ann = BTreeMap::new();
        ann.insert(keys::APP.to_string(), app.to_string());
        if let Some(d) = r.digest {
            ann.insert(keys::DIGEST.to_string(), d.to_string());
        }
        ann.insert(keys::GENERATION.to_string(), r.generation.to_string());
        ann.insert(
            keys::ACTIVATE_AT.to_string(),
            r.activate_at.map(|t| t.to_string()).unwrap_or_default(),
        );
        ann.insert(
            keys::STAGE.to_string(),
            stage.map(|d| d.to_string()).unwrap_or_default(),
        );
        // The kubelet adds its own keys; so do we, so the fetcher parses a realistic file.
        ann.insert("kubernetes.io/config.source".into(), "api".into());
        let files = [(
            "annotations".to_string(),
            format_annotations(&ann).into_bytes(),
        )]
        .into_iter()
        .collect();
        write_atomic_volume(&self.app_dir(app).join("podinfo"), &files)?;
        Ok(())
    }

    // --- the pod ----------------------------------------------------------------------------

    pub fn pod(&self, app: &AppName) -> Option<PodState> {
        let b = fs::read(self.app_dir(app).join("pod.json")).ok()?;
        let p: PodState = serde_json::from_slice(&b).ok()?;
        alive(p.fetcher_pid).then_some(p)
    }

    /// Starts the fetcher, waits for its first sync (the native sidecar's startup probe), then
    /// starts `aether-run` with node. Returns the running pod, or the one already running.
    pub fn ensure_pod(
        &self,
        sh: &Shell,
        app: &AppName,
        timeout: Duration,
    ) -> Result<(PodState, bool)> {
        if let Some(p) = self.pod(app) {
            return Ok((p, false));
        }
        // A pod whose fetcher died may still have node holding the port: clear the old group.
        if let Some(stale) = fs::read(self.app_dir(app).join("pod.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<PodState>(&b).ok())
        {
            eprintln!("the local pod of {app} lost its fetcher; replacing it");
            kill_group(stale.pgid)?;
        }
        let store = self.store_config()?;
        let fetcher = fetcher_bin(sh)?;
        let node = which_node(sh)?;
        let dir = self.app_dir(app);
        let work = self.work_dir(app);
        fs::create_dir_all(dir.join("logs"))?;
        fs::create_dir_all(&work)?;
        fs::create_dir_all(dir.join("podinfo"))?;
        fs::create_dir_all(dir.join("release"))?;
        fs::create_dir_all(dir.join("run"))?;
        let fetcher_port = free_port()?;
        // 3000 like the pod, unless taken; AETHER_APP_PORT overrides (0 = any free port).
        let app_port = match std::env::var("AETHER_APP_PORT")
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
        {
            Some(0) => free_port()?,
            Some(p) => p,
            None if port_open(3000) => free_port()?,
            None => 3000,
        };
        let flog = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("logs/fetcher.log"))?;
        let env = FetcherEnv {
            root: Some(work.clone()),
            annotations_file: Some(dir.join("podinfo/annotations")),
            release_dir: Some(dir.join("release")),
            app: Some(app.to_string()),
            period: Some("2s".into()),
            http_bind: Some(format!("127.0.0.1:{fetcher_port}")),
        };
        let mut f = Command::new(&fetcher);
        if let Some(k) = crate::keys::verify_key()? {
            f.env(FetcherEnv::PUBLIC_KEY, k);
        }
        let f = f
            .envs(env.vars())
            .env(ENV_ENDPOINT, &store.endpoint)
            .env(ENV_BUCKET, &store.bucket)
            .env(ENV_ACCESS_KEY, &store.access_key)
            .env(ENV_SECRET_KEY, store.secret_key.expose())
            .env(FetcherEnv::RUN_STATUS, self.run_status(app))
            .stdin(Stdio::null())
            .stdout(flog.try_clone()?)
            .stderr(flog)
            .process_group(0)
            .spawn()
            .context("starting aether-fetcher")?;
        let pgid = f.id();
        let ready = wait_until(timeout, || {
            http_get(fetcher_port, "/readyz").is_some_and(|(c, _)| c == 200) || !alive(pgid)
        });
        if ready.is_err() || !alive(pgid) {
            let _ = kill_group(pgid);
            bail!(
                "the fetcher did not get ready within {timeout:?}:\n{}",
                tail(&dir.join("logs/fetcher.log"), 15)
            );
        }
        let alog = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("logs/app.log"))?;
        // The app container's command, with this machine's paths.
        let mut n = Command::new(&fetcher);
        // As in the cluster, the app gets DATABASE_URL when a database is configured.
        if let Some(url) = self.global.database_url()? {
            n.env("DATABASE_URL", url.expose());
        }
        let n = n
            .arg("run")
            .env(FetcherEnv::RUN_LISTEN, format!("127.0.0.1:{app_port}"))
            .env(
                FetcherEnv::RUN_WATCH,
                work.join(aether_artifact::volume::RELOAD_DIR),
            )
            .env(FetcherEnv::RUN_STATUS_FILE, self.run_status(app))
            .env(FetcherEnv::RUN_ENTRY_FROM, aether_artifact::volume::CURRENT)
            .arg("--")
            .arg(node)
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(alog.try_clone()?)
            .stderr(alog)
            .process_group(pgid as i32)
            .spawn()
            .context("starting aether-run")?;
        let p = PodState {
            pgid,
            fetcher_pid: pgid,
            runner_pid: n.id(),
            app_port,
            fetcher_port,
        };
        fs::write(dir.join("pod.json"), serde_json::to_vec_pretty(&p)?)?;
        Ok((p, true))
    }

    /// Stops the pod's process group; the embedded store goes with the last app.
    fn stop(&self, app: &AppName) -> Result<bool> {
        let dir = self.app_dir(app);
        let was = match fs::read(dir.join("pod.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<PodState>(&b).ok())
        {
            Some(p) => {
                kill_group(p.pgid)?;
                fs::remove_file(dir.join("pod.json"))?;
                true
            }
            None => false,
        };
        // The store serves every app; stop it with the last one.
        let others = fs::read_dir(&self.dir).map(|rd| {
            rd.flatten().any(|e| {
                AppName::parse(&e.file_name().to_string_lossy())
                    .ok()
                    .is_some_and(|a| a != *app && self.pod(&a).is_some())
            })
        });
        if !others.unwrap_or(false) {
            crate::embedded::stop(&self.dir)?;
        }
        Ok(was)
    }

    /// The app's release lock, held until the file is dropped.
    fn lock(&self, app: &AppName) -> Result<fs::File> {
        fs::create_dir_all(self.app_dir(app))?;
        let path = self.app_dir(app).join("release.lock");
        let lock =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(lock)
    }

    pub fn log_path(&self, app: &AppName, fetcher: bool) -> PathBuf {
        self.app_dir(app)
            .join("logs")
            .join(if fetcher { "fetcher.log" } else { "app.log" })
    }
}

impl Target for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    /// The configured store, or the embedded one (started when needed).
    fn store_config(&self) -> Result<StoreConfig> {
        self.embedded_store_config()
    }

    fn release(&self, app: &AppName) -> Result<Option<Release>> {
        let r = self.read_release(app)?;
        Ok(r.digest.is_some().then_some(r))
    }

    /// Under an exclusive lock on the app's release directory, so concurrent `hot-patch`,
    /// `rollback` and `dev` runs never write the same generation twice.
    fn publish(
        &self,
        app: &AppName,
        next_of: &mut dyn FnMut(&Release) -> Result<Option<Release>>,
    ) -> Result<Option<Published>> {
        let _lock = self.lock(app)?;
        let current = self.read_release(app)?;
        let Some(next) = next_of(&current)? else {
            return Ok(None);
        };
        self.set_release(app, &next)?;
        let signalled = self.pods(app)?;
        Ok(Some(Published {
            release: next,
            signalled,
        }))
    }

    fn ensure_running(&self, app: &AppName, first: &Release, opts: &DeployOpts) -> Result<Running> {
        if opts.replicas.is_some_and(|r| r > 1) {
            bail!("the local target runs one pod: --replicas needs a cluster target (--target kube or microk8s)");
        }
        check_node(&Shell::new()?, opts.runtime.node_major)?;
        if self.release(app)?.is_none() {
            self.set_release(app, first)?;
        }
        let sh = Shell::new()?;
        let (pod, started) = self.ensure_pod(&sh, app, Duration::from_secs(60))?;
        if !started {
            eprintln!(
                "the local pod of {app} is already running (fetcher pid {})",
                pod.fetcher_pid
            );
        }
        Ok(Running {
            url: Some(format!("http://127.0.0.1:{}/", pod.app_port)),
        })
    }

    /// Waits until the fetcher reports `digest` live, `aether-run` has switched the app to it,
    /// and the app answers; a release whose process failed to start fails at once.
    fn wait_served(&self, app: &AppName, digest: &Digest, timeout: Duration) -> Result<()> {
        let p = self
            .pod(app)
            .context("the local pod is not running: run `cargo xtask deploy-sample`")?;
        let t0 = std::time::Instant::now();
        let dir = self.app_dir(app);
        let logs = || {
            format!(
                "--- fetcher log ---\n{}\n--- app log ---\n{}",
                tail(&dir.join("logs/fetcher.log"), 15),
                tail(&dir.join("logs/app.log"), 15)
            )
        };
        loop {
            let st = PodStatus::new(p.name(), None, self.status(app));
            if let Some(why) = st.failed(digest) {
                bail!(
                    "{app} cannot serve {}: {why}; fix the app and hot-patch again\n{}",
                    digest.short(),
                    logs()
                );
            }
            if st.behind(digest).is_none()
                && http_get(p.app_port, "/").is_some_and(|(c, _)| c == 200)
            {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{app} did not serve {} within {timeout:?}: {}\n{}",
                    digest.short(),
                    st.behind(digest)
                        .unwrap_or_else(|| "the app does not answer 200".into()),
                    logs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Under the release lock, so a concurrent publish does not overwrite the stage request
    /// with a stale release (or the reverse).
    fn stage(&self, app: &AppName, digest: Option<Digest>, _pods: &[String]) -> Result<()> {
        let _lock = self.lock(app)?;
        let current = self.read_release(app)?;
        self.annotate(app, &current, digest)
    }

    fn pods(&self, app: &AppName) -> Result<Vec<String>> {
        Ok(self.pod(app).map(|p| vec![p.name()]).unwrap_or_default())
    }

    fn url(&self, app: &AppName) -> Result<Option<String>> {
        Ok(self
            .pod(app)
            .map(|p| format!("http://127.0.0.1:{}/", p.app_port)))
    }

    fn statuses(&self, app: &AppName) -> Result<Vec<PodStatus>> {
        Ok(self
            .pod(app)
            .map(|p| {
                PodStatus::new(
                    p.name(),
                    Some(format!("http://127.0.0.1:{}/", p.app_port)),
                    self.status(app),
                )
            })
            .into_iter()
            .collect())
    }

    fn logs(&self, app: &AppName, fetcher: bool, follow: bool) -> Result<()> {
        let p = self.log_path(app, fetcher);
        if follow {
            let sh = Shell::new()?;
            cmd!(sh, "tail -n 200 -F {p}").run()?;
            return Ok(());
        }
        let text = fs::read_to_string(&p)
            .with_context(|| format!("reading {}: has `deploy-sample {app}` run?", p.display()))?;
        print!("{text}");
        Ok(())
    }

    fn down(&self, app: &AppName) -> Result<()> {
        if self.stop(app)? {
            eprintln!("stopped the local pod of {app}");
        } else {
            eprintln!("no local pod of {app} was running");
        }
        Ok(())
    }
}

/// The fetcher's status from its state file (what `aether-fetcher status` prints).
fn fetcher_status(work: &Path) -> Result<Status> {
    let p = work.join(aether_artifact::volume::STATE_FILE);
    let b = fs::read(&p).with_context(|| format!("no status yet at {}", p.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))
}

/// The fetcher binary: `AETHER_FETCHER_BIN`, else built from this workspace.
pub fn fetcher_bin(sh: &Shell) -> Result<PathBuf> {
    if let Ok(p) = std::env::var("AETHER_FETCHER_BIN") {
        return Ok(PathBuf::from(p));
    }
    build_fetcher(sh, false)
}

/// Builds the fetcher from this workspace (`release`: optimised, as pods run it); its path.
pub fn build_fetcher(sh: &Shell, release: bool) -> Result<PathBuf> {
    let ws = crate::project_root();
    let _dir = sh.push_dir(&ws);
    let profile: &[&str] = if release {
        &["--profile", "release"]
    } else {
        &[]
    };
    cmd!(
        sh,
        "cargo build --quiet {profile...} --package aether-fetcher"
    )
    .run()
    .context("building aether-fetcher")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("aether-fetcher"))
}

fn which_node(sh: &Shell) -> Result<String> {
    match cmd!(sh, "node --version").quiet().ignore_stderr().read() {
        Ok(v) if node_major(&v) >= 18 => Ok("node".into()),
        Ok(v) => bail!("node {v} is too old: the local target needs Node.js 18 or newer"),
        Err(_) => {
            bail!("node is not installed: install Node.js 18+ (e.g. `apt-get install nodejs`)")
        }
    }
}

/// The app's `engines.node` against this machine's node: older is an error, another major a
/// warning (the pod runs the major it asks for).
fn check_node(sh: &Shell, wanted: u32) -> Result<()> {
    let v = cmd!(sh, "node --version")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    let have = node_major(&v);
    if have < wanted {
        bail!("the app asks for Node.js {wanted} (package.json engines.node) but this machine has node {v}: install Node.js {wanted} or newer for the local target");
    }
    if have != wanted {
        eprintln!(
            "warning: the app asks for Node.js {wanted}; the local target runs it on node {v}"
        );
    }
    Ok(())
}

/// "v20.20.2" → 20 (0 when it does not parse).
pub fn node_major(version: &str) -> u32 {
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = attohttpc::get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().unwrap_or_default()))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn tail(p: &Path, n: usize) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
