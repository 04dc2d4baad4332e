//! `aether-fetcher`: the sidecar that makes the wanted release live on the shared volume.
//!
//! One loop in the style of kubernetes/git-sync. Each pass reads the wanted digest (pod
//! annotations and release ConfigMap, higher generation wins); if it differs from the live one
//! it downloads `artifacts/<app>/<digest>/app.tar.gz`, streams it through the contract's
//! verified unpacking into `.releases/<digest>`, publishes it by renaming a temporary symlink
//! over `current`, and touches `.reload/trigger` so `aether-run` switches the app to it. A
//! failure at any point leaves `current` on the last good release; the pass is retried with
//! capped exponential backoff.

pub mod cause;
pub mod desired;
mod http;
pub mod run;
pub mod state;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_artifact::store::{ErrorKind, PartialStore, Store, Timeouts};
use aether_artifact::unpack::{unpack_verified, Limits, UnpackError, TMP_PREFIX};
use aether_artifact::{object_key, volume, AppName, Digest};
use anyhow::{anyhow, bail, Context, Result};

use crate::desired::Wanted;
use crate::state::Status;
use aether_artifact::FetchTrace;

/// The longest a ready release waits for its activation time: a time further ahead comes from
/// a skewed clock, not from a cutover.
const MAX_ACTIVATION_WAIT: Duration = Duration::from_secs(30);

/// What one fetch cost: bytes, the download, and the verification and extraction left after the
/// last byte.
#[derive(Debug, Default, Clone, Copy)]
struct Fetched {
    fetched: bool,
    bytes: u64,
    download: Duration,
    tail: Duration,
}

impl Fetched {
    fn add(&mut self, o: Fetched) {
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
    pub limits: Limits,
}

pub struct Fetcher {
    cfg: Config,
    status: Arc<Mutex<Status>>,
    started: u64,
    last_warnings: Vec<String>,
}

macro_rules! log {
    ($($t:tt)*) => { eprintln!("[fetcher] {}", format!($($t)*)) };
}

impl Fetcher {
    pub fn new(cfg: Config) -> Result<Fetcher> {
        fs::create_dir_all(cfg.root.join(volume::RELEASES))
            .with_context(|| format!("creating {}", cfg.root.display()))?;
        fs::create_dir_all(cfg.root.join(volume::RELOAD_DIR))?;
        clean_leftovers(&cfg.root)?;
        let mut status = state::read(&cfg.root).unwrap_or_default();
        status.ready = false;
        status.consecutive_failures = 0;
        // A streak of failures belongs to the process that had it.
        status.failing_since = None;
        status.digest = live_digest(&cfg.root);
        if status.digest.is_none() {
            status.generation = None;
        }
        Ok(Fetcher {
            cfg,
            status: Arc::new(Mutex::new(status)),
            started: state::unix_now_ms(),
            last_warnings: Vec::new(),
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
                        .get_or_insert_with(state::now_rfc3339)
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

    fn watch(&self) -> Option<mpsc::Receiver<()>> {
        use notify::Watcher as _;
        if self.cfg.one_time {
            return None;
        }
        let (tx, rx) = mpsc::channel();
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
        if !any {
            return None;
        }
        // The watcher lives as long as the process.
        std::mem::forget(w);
        Some(rx)
    }

    fn save(&self) {
        let s = self.status.lock().unwrap().clone();
        if let Err(e) = state::write(&self.cfg.root, &s) {
            log!("cannot write status: {e:#}");
        }
    }

    /// One pass; returns how long to wait before the next.
    fn pass(&mut self) -> Result<Duration> {
        let desired = desired::read(&self.cfg.annotations_file, &self.cfg.release_dir);
        if desired.warnings != self.last_warnings {
            for w in &desired.warnings {
                log!("warning: {w}");
            }
            self.last_warnings = desired.warnings.clone();
        }
        let interval = desired.interval.unwrap_or(self.cfg.period);
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

    fn app_name(&self, from_annotations: Option<String>) -> Result<AppName> {
        let app = self.cfg.app.clone().or(from_annotations).ok_or_else(|| {
            cause::ConfigError(format!(
                "no app name: pass --app ({}) or set the pod annotation {}",
                aether_artifact::FetcherEnv::APP,
                aether_artifact::keys::APP
            ))
        })?;
        Ok(AppName::parse(&app)?)
    }

    /// Makes `.releases/<digest>` complete (app layer and dependency layer), without making it
    /// live. Returns the dependency layer and, when anything was downloaded, where the time went.
    fn make_ready(
        &self,
        app: &AppName,
        digest: &Digest,
        deadline: Instant,
        seen_at_ms: u64,
    ) -> Result<(Option<Digest>, Option<FetchTrace>)> {
        let dest = self
            .cfg
            .root
            .join(volume::RELEASES)
            .join(digest.to_string());
        let mut got = Fetched::default();
        if !dest.is_dir() {
            got = self.fetch(app, digest, &dest, deadline)?;
        }
        // Also for a release already on disk: a pass that failed on the dependency layer left
        // the app layer there, not yet usable.
        let (deps, deps_got) = self.ensure_deps(app, &dest, deadline)?;
        got.add(deps_got);
        let trace = got.fetched.then(|| FetchTrace {
            digest: *digest,
            seen_at_ms,
            download_ms: got.download.as_millis() as u64,
            verify_extract_ms: got.tail.as_millis() as u64,
            ready_at_ms: state::unix_now_ms(),
            bytes: got.bytes,
        });
        Ok((deps, trace))
    }

    /// The first phase of a cutover: the release is made ready and reported as `staged`; it
    /// goes live only when it becomes the wanted release.
    fn stage(&mut self, app: &AppName, digest: Digest) -> Result<()> {
        let t0 = Instant::now();
        let seen_at = state::unix_now_ms();
        let (_, trace) = self.make_ready(app, &digest, t0 + self.cfg.timeout, seen_at)?;
        let mut s = self.status.lock().unwrap();
        s.staged = Some(digest);
        s.staged_at_ms = Some(state::unix_now_ms());
        s.bytes += trace.as_ref().map_or(0, |t| t.bytes);
        if trace.is_some() {
            s.fetch = trace;
        }
        drop(s);
        self.save();
        log!(
            "staged {digest} in {} ms (ready, not live)",
            t0.elapsed().as_millis()
        );
        Ok(())
    }

    fn sync(&mut self, app: &AppName, wanted: &Wanted) -> Result<()> {
        let t0 = Instant::now();
        let seen_at = state::unix_now_ms();
        let deadline = t0 + self.cfg.timeout;
        let rel = Path::new(volume::RELEASES).join(wanted.digest.to_string());
        let (deps, trace) = self.make_ready(app, &wanted.digest, deadline, seen_at)?;
        let bytes = trace.as_ref().map_or(0, |t| t.bytes);
        if Instant::now() > deadline {
            // A release that took longer than the deadline is still complete and verified; keep
            // it on disk (the next pass publishes it at once) but report the overrun.
            return Err(cause::Overrun {
                digest: wanted.digest.short(),
                deadline: self.cfg.timeout,
            }
            .into());
        }
        // How long the fetch took, not counting the wait for the activation time.
        let ms = t0.elapsed().as_millis() as u64;
        if let Some(at) = wanted.activate_at_ms {
            // Every replica staged this release and was told the same moment: switching at it,
            // not when each pod's kubelet happens to deliver the news, is what keeps them
            // together. A time far ahead (a skewed clock) is capped.
            let wait = at.saturating_sub(state::unix_now_ms());
            if wait > 0 {
                let wait = Duration::from_millis(wait).min(MAX_ACTIVATION_WAIT);
                log!(
                    "release {} is ready; activating it at {at} (in {wait:?})",
                    wanted.digest.short()
                );
                std::thread::sleep(wait);
            }
        }
        // The swap and the app's switch first, then the flush that makes the swap survive a
        // node crash (`current` then names a complete release, made durable before it was
        // renamed into place): with an activation time, an fsync before the switch would put
        // the disk's latency (tens to hundreds of ms, different per node) between replicas.
        publish(&self.cfg.root, &rel)?;
        trigger_reload(&self.cfg.root, wanted)?;
        let published_at = state::unix_now_ms();
        if self.cfg.limits.durable {
            aether_artifact::unpack::sync_dir(&self.cfg.root)
                .with_context(|| format!("syncing {}", self.cfg.root.display()))?;
        }
        let mut s = self.status.lock().unwrap();
        if s.staged == Some(wanted.digest) {
            s.staged = None;
            s.staged_at_ms = None;
        }
        s.activate_at_ms = wanted.activate_at_ms;
        if trace.is_some() {
            s.fetch = trace;
        }
        if let Some(prev) = s.digest.replace(wanted.digest) {
            s.retired.retain(|(d, _)| *d != prev && *d != wanted.digest);
            s.retired.push((prev, state::unix_now_ms()));
        }
        s.retired.retain(|(d, _)| *d != wanted.digest);
        s.app = Some(app.to_string());
        s.generation = Some(wanted.generation);
        s.deps_digest = deps;
        s.fetched_at = Some(state::now_rfc3339());
        s.last_error = None;
        s.last_error_cause = None;
        s.failing_since = None;
        s.consecutive_failures = 0;
        s.ready = true;
        s.syncs += 1;
        s.bytes += bytes;
        s.last_sync_ms = ms;
        s.seen_at_ms = Some(seen_at);
        s.published_at_ms = Some(published_at);
        drop(s);
        self.save();
        log!(
            "new digest {} generation {} in {ms} ms",
            wanted.digest,
            wanted.generation
        );
        Ok(())
    }

    /// Streams the object through a pipe into the verified unpacker: nothing touches the disk
    /// unverified under a visible name, and memory stays flat whatever the artifact's size.
    fn fetch(
        &self,
        app: &AppName,
        digest: &Digest,
        dest: &Path,
        deadline: Instant,
    ) -> Result<Fetched> {
        self.fetch_object(app, &object_key(app, digest), digest, dest, deadline, true)
    }

    /// As [`Fetcher::fetch`] for any content-addressed object (`signed`: check the provenance
    /// signature first, for an app layer; a dependency layer is bound by the app layer's record).
    fn fetch_object(
        &self,
        app: &AppName,
        key: &str,
        digest: &Digest,
        dest: &Path,
        deadline: Instant,
        signed: bool,
    ) -> Result<Fetched> {
        let t0 = Instant::now();
        let cfg = PartialStore::from_env()
            .finish()
            .map_err(cause::ConfigError)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let store = Store::with_timeout(cfg, left)?;
        let key = key.to_string();
        let (reader, mut writer) = io::pipe()?;
        let limits = aether_artifact::unpack::Limits {
            deadline: Some(deadline),
            ..self.cfg.limits
        };
        let timeouts = Timeouts {
            connect: self.cfg.connect_timeout,
            stall: self.cfg.stall_timeout,
            total: left,
        };
        if let (Some(pk), true) = (&self.cfg.public_key, signed) {
            verify_signature(&store, pk, app, digest, &timeouts)?;
        }
        let (got, unpacked) = std::thread::scope(|s| {
            let key = &key;
            let store = &store;
            let dl = s.spawn(move || {
                let r = store.get_with_timeouts(key, &mut writer, &timeouts);
                drop(writer);
                (r, Instant::now())
            });
            let unpacked = unpack_verified(reader, digest, dest, &limits);
            (dl.join().expect("download thread panicked"), unpacked)
        });
        let ((got, downloaded), done) = (got, Instant::now());
        let fetched = |bytes| Fetched {
            fetched: true,
            bytes,
            download: downloaded - t0,
            tail: done.saturating_duration_since(downloaded),
        };
        let unpacked = unpacked.map_err(|u| self.explain(u, &store, &key));
        match (got, unpacked) {
            (Ok(n), Ok(_)) => Ok(fetched(n)),
            // The unpacker stopped reading (it refused the archive): its error is the cause, the
            // broken pipe the download then saw is not.
            (Err(e), Err(u)) if e.kind == ErrorKind::Sink => {
                Err(u.context(format!("verifying {}", digest.short())))
            }
            // The store's error explains a truncated stream better than the unpacker's.
            (Err(e), _) => Err(anyhow!(e)),
            (Ok(_), Err(e))
                if matches!(e.downcast_ref::<UnpackError>(),
                    Some(UnpackError::Io { path, err })
                        if path == dest && err.kind() == io::ErrorKind::AlreadyExists) =>
            {
                // Another pass (or a previous run) finished the same digest: fine.
                Ok(Fetched::default())
            }
            (Ok(_), Err(e)) => Err(e.context(format!("verifying {}", digest.short()))),
        }
    }

    /// Makes the release's dependency layer (named by its record) present under `.layers/` and
    /// links it as `<release>/node_modules`, before the release can go live. Returns the layer's
    /// digest and the bytes downloaded.
    fn ensure_deps(
        &self,
        app: &AppName,
        release: &Path,
        deadline: Instant,
    ) -> Result<(Option<Digest>, Fetched)> {
        use aether_artifact::app;
        let record = app::Release::read(release)
            .map_err(|e| anyhow!("the release record is unreadable: {e}"))?;
        let Some(deps) = record.and_then(|r| r.deps) else {
            return Ok((None, Fetched::default()));
        };
        let layers = self.cfg.root.join(volume::LAYERS);
        fs::create_dir_all(&layers).with_context(|| format!("creating {}", layers.display()))?;
        // `.layers/<digest>/node_modules`, not `.layers/<digest>`: node resolves a package to its
        // real path and looks for that package's own dependencies in the `node_modules`
        // directories above it, so the layer must sit in a directory of that name.
        let layer = layers.join(deps.digest.to_string());
        fs::create_dir_all(&layer).with_context(|| format!("creating {}", layer.display()))?;
        let dir = layer.join(app::DEPS_DIR);
        let mut got = Fetched::default();
        if !dir.is_dir() {
            let key = app::layer_key(app, &deps.digest);
            got = self
                .fetch_object(app, &key, &deps.digest, &dir, deadline, false)
                .with_context(|| format!("dependency layer {}", deps.digest.short()))?;
        }
        let link = release.join(app::DEPS_DIR);
        let target = Path::new("..")
            .join("..")
            .join(volume::LAYERS)
            .join(deps.digest.to_string())
            .join(app::DEPS_DIR);
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let tmp = release.join(format!("{TMP_PREFIX}{}", app::DEPS_DIR));
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            fs::rename(&tmp, &link).with_context(|| format!("creating {}", link.display()))?;
            if self.cfg.limits.durable {
                aether_artifact::unpack::sync_dir(release)
                    .with_context(|| format!("syncing {}", release.display()))?;
            }
        }
        Ok((Some(deps.digest), got))
    }

    /// The unpacker's error, with what an operator needs for the volume's own failures: the
    /// sizes when it is full, the user when it is not writable.
    fn explain(&self, u: UnpackError, store: &Store, key: &str) -> anyhow::Error {
        let UnpackError::Io { err, .. } = &u else {
            return anyhow!(u);
        };
        match cause::io_cause(err) {
            Some(aether_artifact::Cause::NoSpace) => {
                let room = cause::space(&self.cfg.root)
                    .map(|(free, total)| {
                        format!(
                            "{} free of {}",
                            aether_artifact::human_bytes(free),
                            aether_artifact::human_bytes(total)
                        )
                    })
                    .unwrap_or_else(|| "size unknown".into());
                let size = store
                    .size(key)
                    .ok()
                    .flatten()
                    .map(|n| {
                        format!(
                            "the artifact is {} compressed, more unpacked",
                            aether_artifact::human_bytes(n)
                        )
                    })
                    .unwrap_or_else(|| "the artifact's size is unknown".into());
                anyhow!(u).context(format!(
                    "no space left on the volume at {} ({room} after removing the partial \
                     release; {size}): give the volume more room (emptyDir sizeLimit) or keep \
                     fewer releases (--keep)",
                    self.cfg.root.display()
                ))
            }
            Some(aether_artifact::Cause::PermissionDenied) => {
                // SAFETY: geteuid cannot fail.
                let uid = unsafe { libc::geteuid() };
                anyhow!(u).context(format!(
                    "permission denied: the fetcher runs as uid {uid} and cannot write there: \
                     make the volume writable for it (pod securityContext fsGroup)"
                ))
            }
            _ => anyhow!(u),
        }
    }

    /// Keeps the live release and the `keep - 1` most recently retired ones; removes older ones
    /// only `gc_grace` after they stopped being live.
    fn gc(&mut self) {
        let root = self.cfg.root.join(volume::RELEASES);
        let s = self.status.lock().unwrap().clone();
        let Ok(entries) = fs::read_dir(&root) else {
            return;
        };
        let mut retired: Vec<(Digest, u64)> = Vec::new();
        for e in entries.flatten() {
            let Ok(d) = Digest::parse(&e.file_name().to_string_lossy()) else {
                continue;
            };
            // The staged release is about to go live: removing it would make the activation
            // fetch it again, late.
            if Some(d) == s.digest || Some(d) == s.staged {
                continue;
            }
            // A release we never saw retire (from before a restart) counts from our start.
            let at = s
                .retired
                .iter()
                .find(|(x, _)| *x == d)
                .map_or(self.started, |(_, t)| *t);
            retired.push((d, at));
        }
        retired.sort_by_key(|r| std::cmp::Reverse(r.1));
        let now = state::unix_now_ms();
        let mut removed = Vec::new();
        for (d, at) in retired.into_iter().skip(self.cfg.keep.saturating_sub(1)) {
            if now.saturating_sub(at) >= self.cfg.gc_grace.as_millis() as u64 {
                match fs::remove_dir_all(root.join(d.to_string())) {
                    Ok(()) => {
                        log!("removed old release {}", d.short());
                        removed.push(d);
                    }
                    Err(e) => log!("cannot remove old release {}: {e}", d.short()),
                }
            }
        }
        if !removed.is_empty() {
            self.status
                .lock()
                .unwrap()
                .retired
                .retain(|(d, _)| !removed.contains(d));
            self.save();
        }
        self.gc_layers();
    }

    /// Removes dependency layers no release on disk links to any more.
    fn gc_layers(&self) {
        let Ok(entries) = fs::read_dir(self.cfg.root.join(volume::LAYERS)) else {
            return;
        };
        let releases = self.cfg.root.join(volume::RELEASES);
        let used: Vec<std::ffi::OsString> = fs::read_dir(&releases)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read_link(e.path().join(aether_artifact::app::DEPS_DIR)).ok())
            .filter_map(|t| t.parent()?.file_name().map(|n| n.to_os_string()))
            .collect();
        for e in entries.flatten() {
            let name = e.file_name();
            if Digest::parse(&name.to_string_lossy()).is_err() || used.contains(&name) {
                continue;
            }
            match fs::remove_dir_all(e.path()) {
                Ok(()) => log!("removed unused dependency layer {}", name.to_string_lossy()),
                Err(err) => log!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

/// Checks, before any byte of the artifact is fetched, that its provenance record is signed by
/// `public_key` and names this app and digest (the digest then binds the artifact's bytes).
fn verify_signature(
    store: &Store,
    public_key: &str,
    app: &AppName,
    digest: &Digest,
    t: &Timeouts,
) -> Result<()> {
    use aether_artifact::provenance::{self, SignatureError};
    let get = |key: &str| -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        match store.get_with_timeouts(key, &mut buf, t) {
            Ok(_) => Ok(Some(buf)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let sig_key = provenance::signature_key(app, digest);
    let unsigned = || SignatureError::Unsigned {
        key: sig_key.clone(),
    };
    let sig = get(&sig_key)?.ok_or_else(unsigned)?;
    let record = get(&provenance::key(app, digest))?.ok_or_else(unsigned)?;
    provenance::verify(
        public_key,
        app,
        digest,
        &record,
        &String::from_utf8_lossy(&sig),
    )?;
    Ok(())
}

/// Renames a fresh symlink over `current`: readers see the old tree or the new one, never a mix.
/// The caller makes the rename durable (`sync_dir` of the root) once the switch is under way.
pub fn publish(root: &Path, rel_target: &Path) -> Result<()> {
    let tmp = root.join(format!(
        ".current{}{}",
        TMP_PREFIX.trim_end_matches('-'),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(rel_target, &tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    fs::rename(&tmp, root.join(volume::CURRENT))
        .with_context(|| format!("publishing {}", rel_target.display()))?;
    Ok(())
}

/// `aether-run` watches `.reload/` (and only it), so one change there means one switch, after
/// the new release is already live. The trigger is rewritten in place with one fixed-length
/// write, so a watcher that follows the file's inode (as node's `--watch` did, nodejs/node#51621)
/// sees every change, not only the first.
fn trigger_reload(root: &Path, w: &Wanted) -> Result<()> {
    use std::io::Write as _;
    let line = aether_artifact::trigger::line(&w.digest, w.generation);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(root.join(volume::RELOAD_TRIGGER))
        .context("opening the reload trigger")?;
    f.write_all(line.as_bytes())
        .context("touching the reload trigger")?;
    Ok(())
}

fn live_digest(root: &Path) -> Option<Digest> {
    let target = fs::read_link(root.join(volume::CURRENT)).ok()?;
    let d = Digest::parse(&target.file_name()?.to_string_lossy()).ok()?;
    root.join(volume::RELEASES)
        .join(d.to_string())
        .is_dir()
        .then_some(d)
}

/// Temporary extraction directories and symlinks from a crash are garbage: nothing visible
/// ever pointed at them.
fn clean_leftovers(root: &Path) -> Result<()> {
    for dir in [
        root.to_path_buf(),
        root.join(volume::RELEASES),
        root.join(volume::LAYERS),
    ]
    .into_iter()
    .chain(
        fs::read_dir(root.join(volume::LAYERS))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    ) {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) || name.starts_with(".current.tmp") {
                let p = e.path();
                let r = if p.is_dir() && !p.is_symlink() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                match r {
                    Ok(()) => log!("removed leftover {}", p.display()),
                    Err(e) => log!("cannot remove leftover {}: {e}", p.display()),
                }
            }
        }
    }
    Ok(())
}
