//! The local pod: the fetcher and `aether-run` (with node under it) started as one process
//! group, as a pod's containers are, stopped whole, and the tools they need found and checked.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aether_artifact::store::{ENV_ACCESS_KEY, ENV_BUCKET, ENV_ENDPOINT, ENV_SECRET_KEY};
use aether_artifact::{AppName, FetcherEnv, Status};
use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::proc::{alive, kill_group, port_open, wait_until};
use crate::targets::Target;

use super::*;

impl Local {
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
        let control = self.local_control()?;
        // With a control plane the pod holds no store key: it asks for URLs with its token.
        let creds = match control {
            Some(_) => None,
            None => Some(self.pod_credentials(app, false)?),
        };
        let fetcher = fetcher_bin(sh)?;
        let node = which_node(sh)?;
        let dir = self.app_dir(app);
        let work = self.work_dir(app);
        fs::create_dir_all(dir.join("logs"))?;
        fs::create_dir_all(&work)?;
        fs::create_dir_all(dir.join("podinfo"))?;
        // A new pod starts without a debug request, as on a cluster.
        let _ = fs::remove_file(self.debug_file(app));
        fs::create_dir_all(dir.join("release"))?;
        fs::create_dir_all(dir.join("run"))?;
        let fetcher_port = crate::proc::free_port()?;
        // 3000 like the pod, unless taken; AETHER_APP_PORT overrides (0 = any free port).
        let app_port = match std::env::var("AETHER_APP_PORT")
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
        {
            Some(0) => crate::proc::free_port()?,
            Some(p) => p,
            None if port_open(3000) => crate::proc::free_port()?,
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
        f.env_clear().envs(pod_env(false));
        if let Some(k) = crate::keys::verify_key()? {
            f.env(FetcherEnv::PUBLIC_KEY, k)
                .env(FetcherEnv::REQUIRE_SIGNATURES, "true");
        }
        if let Some(ca) = &store.ca_file {
            f.env(aether_artifact::store::ENV_CA_FILE, ca);
        }
        match (&control, &creds) {
            (Some(c), _) => {
                let token = dir.join("control-token");
                crate::config::write_private(&token, c.pod_token(app).expose().as_bytes())?;
                f.env(aether_artifact::control::ENV_URL, &c.url)
                    .env(aether_artifact::control::ENV_TOKEN_FILE, token);
            }
            (None, Some(creds)) => {
                f.env(ENV_ENDPOINT, &store.endpoint)
                    .env(aether_artifact::store::ENV_REGION, &store.region)
                    .env(ENV_BUCKET, &store.bucket)
                    .env(ENV_ACCESS_KEY, &creds.access_key)
                    .env(ENV_SECRET_KEY, creds.secret_key.expose());
            }
            (None, None) => unreachable!("credentials are chosen when there is no control plane"),
        }
        let f = f
            .envs(env.vars())
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
        n.env_clear().envs(pod_env(true));
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
    pub(super) fn stop(&self, app: &AppName) -> Result<bool> {
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
            crate::embedded_control::stop(&self.dir)?;
        }
        Ok(was)
    }
}

/// The fetcher's status from its state file (what `aether-fetcher status` prints).
pub(super) fn fetcher_status(work: &Path) -> Result<Status> {
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
    let target = crate::target_dir();
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("aether-fetcher"))
}

pub(super) fn which_node(sh: &Shell) -> Result<String> {
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
pub(super) fn check_node(sh: &Shell, wanted: u32) -> Result<()> {
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

pub(super) fn tail(p: &Path, n: usize) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What a local pod's processes start from: what a container has (`PATH`, `HOME`, the user,
/// locale, time zone, temp dir, terminal), Node's own settings (`NODE_*`), and the variables
/// the user forwards to the app by name in `AETHER_APP_ENV` (comma-separated; `app` only).
/// Never the rest of the shell: the CLI's signing key, store credentials or anything else the
/// app has no business reading (the fetcher gets its store settings one by one; the app none).
pub(super) fn pod_env(app: bool) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    const BASE: [&str; 8] = [
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "TERM",
    ];
    let forwarded: Vec<String> = std::env::var("AETHER_APP_ENV")
        .ok()
        .filter(|_| app)
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            BASE.contains(&k.as_ref())
                || k.starts_with("LC_")
                || (k.starts_with("NODE_") && k != "NODE_AUTH_TOKEN")
                || forwarded.iter().any(|f| *f == k)
        })
        .collect()
}
