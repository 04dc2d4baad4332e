//! The fetcher's status: served on /status, written to `<root>/.fetcher/state.json` (so
//! `aether-fetcher status` works through `kubectl exec` without a shell) and read back at start.

use std::fs;
use std::path::Path;

use aether_artifact::volume;
use anyhow::{Context, Result};

pub use aether_artifact::Status;

pub fn read(root: &Path) -> Result<Status> {
    let p = root.join(volume::STATE_FILE);
    let b = fs::read(&p).with_context(|| {
        format!(
            "reading {}: has the fetcher run with --root {}?",
            p.display(),
            root.display()
        )
    })?;
    serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))
}

pub fn write(root: &Path, s: &Status) -> Result<()> {
    let dir = root.join(volume::STATE_DIR);
    fs::create_dir_all(&dir)?;
    let tmp = dir.join("state.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(s)?)?;
    fs::rename(&tmp, root.join(volume::STATE_FILE))?;
    Ok(())
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

pub use aether_artifact::unix_now_ms;

/// Prometheus text exposition.
pub fn metrics(s: &Status) -> String {
    // Every cause, zeros included, so rate() and alerts work from the first scrape.
    let by_cause: String = aether_artifact::Cause::ALL
        .iter()
        .map(|c| {
            format!(
                "aether_fetcher_failures_total{{cause=\"{c}\"}} {}\n",
                s.failures_by_cause.get(c).copied().unwrap_or(0)
            )
        })
        .collect();
    let head = "# HELP aether_fetcher_failures_total Failed sync passes, by cause.\n# TYPE aether_fetcher_failures_total counter\n";
    let runner = s.runner.as_ref().map_or(String::new(), |r| {
        format!(
            "# HELP aether_run_switches_total Releases the app switched to without a restart.\n# TYPE aether_run_switches_total counter\naether_run_switches_total {}\n\
             # HELP aether_run_restarts_total App processes restarted after they exited.\n# TYPE aether_run_restarts_total counter\naether_run_restarts_total {}\n\
             # HELP aether_run_start_failed Whether the newest release's process failed to start.\n# TYPE aether_run_start_failed gauge\naether_run_start_failed {}\n",
            r.swaps,
            r.restarts,
            u8::from(r.failed_digest.is_some())
        )
    });
    format!("{head}{by_cause}{}{runner}", rest(s))
}

fn rest(s: &Status) -> String {
    format!(
        "# HELP aether_fetcher_syncs_total Releases published.\n# TYPE aether_fetcher_syncs_total counter\naether_fetcher_syncs_total {}\n\
         # HELP aether_fetcher_bytes_total Artifact bytes downloaded.\n# TYPE aether_fetcher_bytes_total counter\naether_fetcher_bytes_total {}\n\
         # HELP aether_fetcher_last_sync_seconds Duration of the last successful sync.\n# TYPE aether_fetcher_last_sync_seconds gauge\naether_fetcher_last_sync_seconds {:.3}\n\
         # HELP aether_fetcher_consecutive_failures Failed passes since the last success.\n# TYPE aether_fetcher_consecutive_failures gauge\naether_fetcher_consecutive_failures {}\n\
         # HELP aether_fetcher_retrying_since_seconds Unix time the current run of failed passes began (0 while healthy).\n# TYPE aether_fetcher_retrying_since_seconds gauge\naether_fetcher_retrying_since_seconds {}\n\
         # HELP aether_fetcher_ready Whether the wanted release is live.\n# TYPE aether_fetcher_ready gauge\naether_fetcher_ready {}\n",
        s.syncs,
        s.bytes,
        s.last_sync_ms as f64 / 1000.0,
        s.consecutive_failures,
        s.failing_since
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        u8::from(s.ready)
    )
}
