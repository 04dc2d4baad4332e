//! One pass's work when the wanted release changes: make it ready beside the live one (the
//! app layer and its dependency layer), stage it for a cutover, or make it live and tell
//! `aether-run`.
use std::path::Path;
use std::time::{Duration, Instant};

use aether_artifact::{volume, AppName, Digest, FetchTrace};
use anyhow::{Context, Result};

use super::desired::Wanted;
use super::publish::*;
use super::*;

impl Fetcher {
    /// Makes `.releases/<digest>` complete (app layer and dependency layer), without making it
    /// live. Returns the dependency layer and, when anything was downloaded, where the time went.
    pub(super) fn make_ready(
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
            ready_at_ms: status::unix_now_ms(),
            bytes: got.bytes,
        });
        Ok((deps, trace))
    }

    /// The first phase of a cutover: the release is made ready and reported as `staged`; it
    /// goes live only when it becomes the wanted release.
    pub(super) fn stage(&mut self, app: &AppName, digest: Digest) -> Result<()> {
        let t0 = Instant::now();
        let seen_at = status::unix_now_ms();
        let (_, trace) = self.make_ready(app, &digest, t0 + self.cfg.timeout, seen_at)?;
        let mut s = self.status.lock().unwrap();
        s.staged = Some(digest);
        s.staged_at_ms = Some(status::unix_now_ms());
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

    pub(super) fn sync(&mut self, app: &AppName, wanted: &Wanted) -> Result<()> {
        let t0 = Instant::now();
        let seen_at = status::unix_now_ms();
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
            let wait = at.saturating_sub(status::unix_now_ms());
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
        trigger_reload(&self.cfg.root, wanted, self.inspect)?;
        let published_at = status::unix_now_ms();
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
            s.retired.push((prev, status::unix_now_ms()));
        }
        s.retired.retain(|(d, _)| *d != wanted.digest);
        s.app = Some(app.to_string());
        s.generation = Some(wanted.generation);
        s.deps_digest = deps;
        s.fetched_at = Some(status::now_rfc3339());
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
}
