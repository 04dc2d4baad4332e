//! `aether-fetcher`: the sidecar that makes the wanted release live on the shared volume.
//!
//! One loop in the style of kubernetes/git-sync. Each pass reads the wanted digest (pod
//! annotations and release ConfigMap, higher generation wins); if it differs from the live one
//! it downloads `artifacts/<app>/<digest>/app.tar.gz`, streams it through the contract's
//! verified unpacking into `.releases/<digest>`, publishes it by renaming a temporary symlink
//! over `current`, and touches `.reload/trigger` so `aether-run` switches the app to it. A
//! failure at any point leaves `current` on the last good release; the pass is retried with
//! capped exponential backoff.

macro_rules! log {
    ($($t:tt)*) => { eprintln!("[fetcher] {}", format!($($t)*)) };
}

mod apiwatch;
pub mod cause;
pub mod desired;
mod fetch;
mod gc;
mod http;
mod publish;
pub mod status;
mod sync;
mod verify;

pub use publish::publish;
use publish::{clean_leftovers, live_digest};

use std::fs;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_artifact::unpack::Limits;
use aether_artifact::{volume, AppName};
use anyhow::{bail, Context, Result};

use status::Status;

/// The longest a ready release waits for its activation time: a time further ahead comes from
/// a skewed clock, not from a cutover.
const MAX_ACTIVATION_WAIT: Duration = Duration::from_secs(30);

/// What one fetch cost: bytes, the download, and the verification and extraction left after the
/// last byte.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Fetched {
    pub(super) fetched: bool,
    pub(super) bytes: u64,
    pub(super) download: Duration,
    pub(super) tail: Duration,
}

impl Fetched {
    pub(super) fn add(&mut self, o: Fetched) {
        self.fetched |= o.fetched;
        self.bytes += o.bytes;
        self.download += o.download;
        self.tail += o.tail;
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub annotations_file: PathBuf,
    pub release_dir: PathBuf,
    pub app: Option<String>,
    pub period: Duration,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub stall_timeout: Duration,
    pub max_backoff: Duration,
    pub keep: usize,
    pub gc_grace: Duration,
    pub max_failures: u32,
    pub one_time: bool,
    pub http_bind: String,
    /// `aether-run`'s status file, merged into `/status`.
    pub run_status: PathBuf,
    pub public_key: Option<String>,
    /// Watch the release ConfigMap through the API server ([`apiwatch`]).
    pub watch_api: bool,
    pub namespace: Option<String>,
    /// The control plane's URL and the pod token file: read URLs come from it.
    pub control: Option<(String, PathBuf)>,
    pub limits: Limits,
}

pub struct Fetcher {
    pub(super) cfg: Config,
    pub(super) status: Arc<Mutex<Status>>,
    pub(super) started: u64,
    pub(super) last_warnings: Vec<String>,
    /// The release ConfigMap as the API watch last delivered it.
    pub(super) api: apiwatch::Latest,
    /// The inspector port the pod's annotations ask for (`cargo xtask debug`).
    pub(super) inspect: Option<u16>,
}

impl Fetcher {
    pub fn new(cfg: Config) -> Result<Fetcher> {
        fs::create_dir_all(cfg.root.join(volume::RELEASES))
            .with_context(|| format!("creating {}", cfg.root.display()))?;
        fs::create_dir_all(cfg.root.join(volume::RELOAD_DIR))?;
        clean_leftovers(&cfg.root)?;
        let mut status = status::read(&cfg.root).unwrap_or_default();
        status.ready = false;
        status.consecutive_failures = 0;
        // A streak of failures belongs to the process that had it.
        status.failing_since = None;
        status.verifies_key = match &cfg.public_key {
            Some(k) => Some(aether_artifact::provenance::key_id(k)?),
            None => None,
        };
        status.digest = live_digest(&cfg.root);
        if status.digest.is_none() {
            status.generation = None;
        }
        // What the trigger says now: a request withdrawn while this process was down differs
        // from it, and is carried out on the first pass.
        let inspect = fs::read_to_string(cfg.root.join(volume::RELOAD_TRIGGER))
            .ok()
            .and_then(|l| aether_artifact::trigger::inspect(&l));
        Ok(Fetcher {
            cfg,
            status: Arc::new(Mutex::new(status)),
            started: status::unix_now_ms(),
            last_warnings: Vec::new(),
            api: Default::default(),
            inspect,
        })
    }

    pub fn run(mut self) -> Result<()> {
        if !self.cfg.http_bind.is_empty() && !self.cfg.one_time {
            let addr = http::spawn(
                &self.cfg.http_bind,
                self.status.clone(),
                self.cfg.run_status.clone(),
            )?;
            log!("serving /healthz /readyz /status /metrics on {addr}");
        }
        let wake = self.watch();
        loop {
            let t0 = Instant::now();
            let outcome = self.pass();
            let (ok, interval) = match outcome {
                Ok(interval) => (true, interval),
                Err(e) => {
                    let why = cause::classify(&e);
                    let mut s = self.status.lock().unwrap();
                    s.consecutive_failures += 1;
                    s.failures += 1;
                    s.last_error = Some(format!("{e:#}"));
                    s.last_error_cause = Some(why);
                    *s.failures_by_cause.entry(why).or_default() += 1;
                    let since = s
                        .failing_since
                        .get_or_insert_with(status::now_rfc3339)
                        .clone();
                    let n = s.consecutive_failures;
                    drop(s);
                    self.save();
                    let backoff = self
                        .cfg
                        .period
                        .saturating_mul(1 << (n - 1).min(16))
                        .min(self.cfg.max_backoff.max(self.cfg.period));
                    let gives_up = self.cfg.one_time
                        || (self.cfg.max_failures > 0 && n >= self.cfg.max_failures);
                    let next = if gives_up {
                        "giving up".to_string()
                    } else {
                        format!("retrying in {backoff:?}")
                    };
                    log!(
                        "sync failed: {why} ({n} in a row, failing since {since}, {next}), still serving the current release: {e:#}"
                    );
                    if self.cfg.one_time {
                        bail!("one-time sync failed");
                    }
                    if gives_up {
                        bail!(
                            "{n} consecutive failures (--max-failures {})",
                            self.cfg.max_failures
                        );
                    }
                    (false, backoff)
                }
            };
            if self.cfg.one_time && ok {
                return Ok(());
            }
            self.gc();
            let sleep = interval.saturating_sub(t0.elapsed().min(interval / 2));
            // A change to either mounted directory wakes us at once; the period is a safety net.
            if let Some(rx) = &wake {
                if rx.recv_timeout(sleep).is_ok() {
                    // Let the writer finish its swap, then swallow the burst of events it caused.
                    std::thread::sleep(Duration::from_millis(5));
                    while rx.try_recv().is_ok() {}
                }
            } else {
                std::thread::sleep(sleep);
            }
        }
    }

    pub(super) fn watch(&self) -> Option<mpsc::Receiver<()>> {
        use notify::Watcher as _;
        if self.cfg.one_time {
            return None;
        }
        let (tx, rx) = mpsc::channel();
        self.watch_api(tx.clone());
        // Reads are not changes: notify reports opens, and the pass reads these directories.
        let mut w = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            if e.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .map_err(|e| log!("file watching unavailable, polling only: {e}"))
        .ok()?;
        let mut any = false;
        for dir in [
            self.cfg.annotations_file.parent(),
            Some(self.cfg.release_dir.as_path()),
        ]
        .into_iter()
        .flatten()
        {
            // Watch the directory, not the file: the kubelet swaps `..data`, so a watch on the
            // file itself follows the old target and goes silent (kubernetes#111947).
            match w.watch(dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => any = true,
                Err(e) => log!("cannot watch {} (polling it instead): {e}", dir.display()),
            }
        }
        // The watcher lives as long as the process.
        std::mem::forget(w);
        // Without a file watch the API watch alone still wakes the loop; the period polls.
        if !any {
            log!("no directory watched: the period decides how soon a change is seen");
        }
        Some(rx)
    }

    /// Starts the release ConfigMap's watch when asked for and possible; says which path the
    /// news take either way.
    fn watch_api(&self, wake: mpsc::Sender<()>) {
        let why_not = if !self.cfg.watch_api {
            Err(anyhow::anyhow!(
                "off ({}=false)",
                aether_artifact::FetcherEnv::WATCH_API
            ))
        } else {
            let app = self.app_name(
                desired::read(&self.cfg.annotations_file, &self.cfg.release_dir, None).app,
            );
            app.and_then(|app| {
                apiwatch::WatchConfig::in_cluster(
                    self.cfg.namespace.clone(),
                    aether_artifact::release::configmap_name(app.as_str()),
                )
            })
        };
        match why_not {
            Ok(cfg) => {
                log!(
                    "watching configmap {} in {} through the API server",
                    cfg.configmap,
                    cfg.namespace
                );
                apiwatch::spawn(cfg, self.api.clone(), wake, self.status.clone());
            }
            Err(e) => {
                let news = format!("volumes (no API watch: {e:#})");
                log!("news of releases: {news}");
                self.status.lock().unwrap().news = Some(news);
            }
        }
    }

    pub(super) fn save(&self) {
        let s = self.status.lock().unwrap().clone();
        if let Err(e) = status::write(&self.cfg.root, &s) {
            log!("cannot write status: {e:#}");
        }
    }

    /// One pass; returns how long to wait before the next.
    pub(super) fn pass(&mut self) -> Result<Duration> {
        let api = self.api.lock().unwrap().clone();
        let desired = desired::read(
            &self.cfg.annotations_file,
            &self.cfg.release_dir,
            api.as_ref(),
        );
        if desired.warnings != self.last_warnings {
            for w in &desired.warnings {
                log!("warning: {w}");
            }
            self.last_warnings = desired.warnings.clone();
        }
        let interval = desired.interval.unwrap_or(self.cfg.period);
        if desired.inspect != self.inspect {
            self.inspect = desired.inspect;
            if publish::retrigger_inspect(&self.cfg.root, self.inspect)? {
                match self.inspect {
                    Some(p) => log!("debug: the app restarts with its inspector on 127.0.0.1:{p}"),
                    None => log!("debug: the app restarts without its inspector"),
                }
            }
        }
        let Some(wanted) = desired.wanted else {
            if self.cfg.one_time {
                bail!(
                    "nothing to sync: no digest in {} or {}",
                    self.cfg.annotations_file.display(),
                    self.cfg.release_dir.display()
                );
            }
            return Ok(interval);
        };
        let current = self.status.lock().unwrap().digest;
        if current == Some(wanted.digest) {
            match desired.stage.filter(|d| Some(*d) != current) {
                Some(stage) if self.status.lock().unwrap().staged != Some(stage) => {
                    let app = self.app_name(desired.app.clone())?;
                    self.stage(&app, stage)?;
                }
                Some(_) => {}
                // A cutover that was called off: the staged release is an old one like any
                // other now, for GC to remove in its time.
                None => {
                    let mut s = self.status.lock().unwrap();
                    if s.staged.take().is_some() {
                        s.staged_at_ms = None;
                        drop(s);
                        self.save();
                    }
                }
            }
            let mut s = self.status.lock().unwrap();
            let changed =
                !s.ready || s.generation != Some(wanted.generation) || s.consecutive_failures > 0;
            s.ready = true;
            s.generation = Some(wanted.generation);
            s.consecutive_failures = 0;
            s.last_error = None;
            s.last_error_cause = None;
            s.failing_since = None;
            drop(s);
            if changed {
                self.save();
            }
            return Ok(interval);
        }
        let app = self.app_name(desired.app)?;
        self.sync(&app, &wanted)?;
        Ok(interval)
    }

    pub(super) fn app_name(&self, from_annotations: Option<String>) -> Result<AppName> {
        let app = self.cfg.app.clone().or(from_annotations).ok_or_else(|| {
            cause::ConfigError(format!(
                "no app name: pass --app ({}) or set the pod annotation {}",
                aether_artifact::FetcherEnv::APP,
                aether_artifact::keys::APP
            ))
        })?;
        Ok(AppName::parse(&app)?)
    }
}
