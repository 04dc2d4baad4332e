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
use std::path::PathBuf;
use std::time::Duration;

use aether_artifact::podinfo::{format_annotations, write_atomic_volume};
use aether_artifact::store::StoreConfig;
use aether_artifact::{keys, release, AppName, Digest, FetcherEnv, Status};
use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::config::Global;
use crate::proc::alive;
use crate::release::Release;
use crate::targets::{
    DeployOpts, Forward, LogLine, PodCredentials, PodStatus, Published, Running, Target, Writer,
};

mod pod;
mod tail_file;

use pod::*;
pub use pod::{build_fetcher, fetcher_bin, http_get, node_major};

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

    /// The local control plane (started when needed), unless `AETHER_CONTROL=off`. It signs
    /// with the per-app read keys of the embedded store, else with the store's read-only pair
    /// when one is configured, else with the uploader's key (the local pod runs as the
    /// uploader, who holds that key anyway).
    fn local_control(&self) -> Result<Option<crate::embedded_control::Running>> {
        if !crate::embedded_control::enabled() {
            return Ok(None);
        }
        let mut store = self.store_config()?;
        let layers = self.global.store_layers()?;
        let derive = layers.endpoint.is_none();
        if let (false, Some(ak), Some(sk)) =
            (derive, layers.read_access_key, layers.read_secret_key)
        {
            store.access_key = ak;
            store.secret_key = sk;
        }
        Ok(Some(crate::embedded_control::ensure(
            &Shell::new()?,
            &self.dir,
            &store,
            derive,
        )?))
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
        let mut ann = r.annotations(stage);
        ann.insert(keys::APP.to_string(), app.to_string());
        if let Ok(port) = fs::read_to_string(self.debug_file(app)) {
            ann.insert(keys::DEBUG.to_string(), port.trim().to_string());
        }
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

    /// The pod's `aether.dev/debug` annotation, kept beside its other annotations' source (a
    /// publish rewrites the file from the release; a new pod starts without it).
    pub(super) fn debug_file(&self, app: &AppName) -> PathBuf {
        self.app_dir(app).join("debug-port")
    }

    // --- the pod ----------------------------------------------------------------------------

    pub fn pod(&self, app: &AppName) -> Option<PodState> {
        let b = fs::read(self.app_dir(app).join("pod.json")).ok()?;
        let p: PodState = serde_json::from_slice(&b).ok()?;
        alive(p.fetcher_pid).then_some(p)
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

    /// The same choice as on a cluster, except that the uploader's own key may do without a
    /// flag: the fetcher runs as the uploader, who can read that key anyway.
    fn pod_credentials(&self, app: &AppName, _allow_writer: bool) -> Result<PodCredentials> {
        crate::targets::pod_store::pod_credentials(
            app,
            &self.store_config()?,
            &self.global.store_layers()?,
            Writer::SameUser,
        )
    }

    fn control(&self) -> Result<Option<aether_artifact::control::Client>> {
        Ok(self.local_control()?.map(|c| c.client()))
    }

    fn control_if_running(&self) -> Result<Option<aether_artifact::control::Client>> {
        if !crate::embedded_control::enabled() {
            return Ok(None);
        }
        match crate::embedded_control::running(&self.dir) {
            Some(c) => Ok(Some(c.client())),
            None => {
                bail!("the local control plane is not running; the next upload or deploy starts it")
            }
        }
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

    /// Reading two files.
    fn status_poll(&self) -> Duration {
        Duration::from_millis(50)
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

    fn logs(&self, app: &AppName, fetcher: bool) -> Result<()> {
        let p = self.log_path(app, fetcher);
        let text = fs::read_to_string(&p)
            .with_context(|| format!("reading {}: has `deploy-sample {app}` run?", p.display()))?;
        print!("{text}");
        Ok(())
    }

    fn follow_logs(
        &self,
        app: &AppName,
        fetcher: bool,
        sink: &mut dyn FnMut(LogLine) -> bool,
    ) -> Result<()> {
        let pod = || {
            self.pod(app)
                .map(|p| p.name())
                .unwrap_or_else(|| format!("{app} (stopped)"))
        };
        tail_file::follow(&self.log_path(app, fetcher), &pod, sink)
    }

    /// Pods share this machine's loopback: another app's inspector may hold 9229.
    fn inspector_port(&self) -> Result<u16> {
        crate::proc::free_port()
    }

    fn set_inspector(&self, app: &AppName, pod: &str, port: Option<u16>) -> Result<()> {
        let _lock = self.lock(app)?;
        match self.pod(app) {
            Some(p) if p.name() == pod => {}
            _ => bail!("{app} has no live pod {pod}: `cargo xtask hot-status {app}` lists them"),
        }
        match port {
            Some(p) => fs::write(self.debug_file(app), p.to_string())?,
            None => match fs::remove_file(self.debug_file(app)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            },
        }
        let r = self.read_release(app)?;
        self.annotate(app, &r, None)
    }

    fn forward(&self, _pod: &str, port: u16) -> Result<Forward> {
        Ok(Forward {
            local: port,
            child: None,
        })
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
