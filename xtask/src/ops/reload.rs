//! How a new release reaches the pods, written once against [`Target`] for `hot-patch`,
//! `rollback` and `dev`, with the per-stage trace of each reload.
//!
//! One pod, or `--no-barrier`: publish, and each pod switches when its kubelet delivers the
//! news. More than one pod: a cutover in two phases, so replicas never serve different
//! versions for longer than a switch takes, and a release one replica cannot get goes nowhere:
//! 1. *stage*: every pod fetches, verifies and extracts the release without making it live,
//!    and reports `staged`. A pod that fails (or does not report within `--stage-timeout`)
//!    calls the cutover off: the stage request is withdrawn and nothing was published, so every
//!    pod keeps serving what it served.
//! 2. *activate*: one publish names the release and a moment a little ahead (`activate-at`, in
//!    the ConfigMap and the annotations alike); every fetcher waits for that moment and swaps.
//!    Waiting for a shared time, rather than for each kubelet's volume refresh, is what keeps
//!    the switches together: the refresh itself varies by hundreds of milliseconds per pod.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_artifact::{AppName, Cause, Digest};
use anyhow::{bail, Result};

use crate::release::Release;
use crate::targets::{PodStatus, Published, Target};

use super::trace::fetch_marks;
pub use super::trace::{Shot, Stage, Trace};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct CutoverArgs {
    /// Stage the release on every pod, then switch them together [default: when more than one
    /// pod runs].
    #[arg(long, conflicts_with = "no_barrier")]
    pub barrier: bool,
    /// Let each pod switch as soon as it has the release, as with one pod.
    #[arg(long)]
    pub no_barrier: bool,
    /// Seconds every pod may take to stage the release before the cutover is called off.
    #[arg(long, default_value_t = 60, env = "AETHER_STAGE_TIMEOUT")]
    pub stage_timeout: u64,
    /// Milliseconds from the activation signal to the switch [default: twice the time the
    /// pods took to see the stage signal, plus 30 ms; at least 40].
    #[arg(long)]
    pub activate_lead_ms: Option<u64>,
}

/// A reload as the command saw it before publishing: when it started, and the moments the
/// command's own stages ended (`dev`: debounce, pack, upload).
pub struct Reload<'a> {
    pub app: &'a AppName,
    pub digest: Digest,
    pub marks: Vec<(Stage, u64)>,
    /// Wait until every pod serves it (and trace it).
    pub wait: Option<Duration>,
}

pub struct Outcome {
    pub published: Published,
    pub barrier: bool,
    /// When the command waited until every pod served the release.
    pub trace: Option<Trace>,
}

/// Publishes `next_of`'s release (which must name `r.digest`), through the barrier when it
/// applies; waits and traces when asked. `None`: nothing to do.
pub fn roll(
    t: &dyn Target,
    r: Reload,
    args: &CutoverArgs,
    next_of: &mut dyn FnMut(&Release) -> Result<Option<Release>>,
) -> Result<Option<Outcome>> {
    let app = r.app;
    let digest = r.digest;
    let told = match args.no_barrier {
        true => Vec::new(),
        false => t.pods(app)?,
    };
    let barrier = !args.no_barrier && (args.barrier || told.len() > 1);
    let probe = match r.wait {
        Some(_) => t.url(app)?.map(Probe::start),
        None => None,
    };
    let mut marks = r.marks;
    let mut lead = None;
    if barrier {
        // No check that the release is new: staging the live release is a no-op on every pod,
        // and the publish below then says "nothing to do"; a check would cost a kubectl call.
        let asked = now_ms();
        t.stage(app, Some(digest), &told)?;
        marks.push((Stage::Prepare, now_ms()));
        eprintln!(
            "staging {} on {} pod(s) of {app}: {}",
            digest.short(),
            told.len(),
            told.join(", ")
        );
        let staged = match wait_staged(t, app, &digest, &told, args.stage_timeout) {
            Ok(s) => s,
            Err(e) => {
                if let Err(c) = t.stage(app, None, &told) {
                    eprintln!("warning: could not withdraw the stage request: {c:#}");
                }
                return Err(e);
            }
        };
        let seen = fetch_marks(&mut marks, &staged, &digest, None);
        let propagation = seen.map_or(100, |s| s.saturating_sub(asked));
        // Twice what the slowest pod took to hear the stage request, and a margin for the
        // write itself: tens of ms when the fetchers watch the API, most of a second when a
        // pod hears through its volumes.
        lead = Some(
            args.activate_lead_ms
                .unwrap_or_else(|| (2 * propagation + 30).clamp(40, 10_000)),
        );
        eprintln!(
            "every pod staged {}; activating in {} ms",
            digest.short(),
            lead.unwrap_or_default()
        );
    }
    let p = t.publish(app, &mut |cur| {
        let Some(mut next) = next_of(cur)? else {
            return Ok(None);
        };
        if next.digest != Some(digest) {
            bail!("{app}'s release changed meanwhile (another hot-patch?): run the command again");
        }
        next.activate_at = lead.map(|l| now_ms() + l);
        Ok(Some(next))
    });
    let p = match p {
        Ok(Some(p)) => p,
        other => {
            if barrier {
                let _ = t.stage(app, None, &told);
            }
            return other.map(|_| None);
        }
    };
    marks.push((
        if barrier {
            Stage::ActivationSignal
        } else {
            Stage::Signal
        },
        now_ms(),
    ));
    if let Some(at) = p.release.activate_at {
        marks.push((Stage::UntilActivation, at));
    }
    let mut trace = None;
    if let (Some(wait), false) = (r.wait, p.signalled.is_empty()) {
        if let Some(at) = p.release.activate_at {
            // Nothing switches before the activation time, and polling the pods (on a cluster,
            // a GET through the API server each) in the middle of their switch competes with
            // it for the CPU.
            std::thread::sleep(Duration::from_millis((at + 100).saturating_sub(now_ms())));
        }
        let waited = t.wait_served(app, &digest, wait);
        let pods = match waited {
            Ok(()) => t.statuses(app),
            Err(e) => Err(e),
        };
        let last_switch = pods.as_ref().ok().and_then(|pods| {
            pods.iter()
                .filter_map(|p| p.status.as_ref()?.runner.as_ref()?.switched_at_ms)
                .max()
        });
        let probes = probe
            .map(|p| p.stop_after(last_switch.unwrap_or_else(now_ms)))
            .unwrap_or_default();
        let pods = pods?;
        trace = Some(Trace::new(&p.release, marks, &pods, &probes, barrier));
    }
    Ok(Some(Outcome {
        published: p,
        barrier,
        trace,
    }))
}

/// `hot-patch`: makes the app's pods switch to `digest`, already in the store (checked first,
/// so a refusal changes nothing).
pub fn patch(
    t: &dyn Target,
    app: &AppName,
    digest: Digest,
    wait: Option<Duration>,
    args: &CutoverArgs,
) -> Result<Option<Outcome>> {
    crate::ops::upload::require_in_store(&t.store()?, app, &digest)?;
    let r = Reload {
        app,
        digest,
        marks: vec![(Stage::Start, now_ms())],
        wait,
    };
    roll(t, r, args, &mut |cur| Ok(cur.next_or_say(app, digest)))
}

/// `rollback`: back to `to`, or to the release before the current one, as a new generation.
pub fn rollback(
    t: &dyn Target,
    app: &AppName,
    to: Option<Digest>,
    wait: Option<Duration>,
    args: &CutoverArgs,
) -> Result<Option<Outcome>> {
    // The destination is settled first: a cutover stages it before anything is published.
    let cur = t.release(app)?.unwrap_or_default();
    let dest = cur.rollback_target(to)?;
    eprintln!(
        "rolling {app} back from {} to {}",
        cur.digest.map(|d| d.short()).unwrap_or_default(),
        dest.short()
    );
    patch(t, app, dest, wait, args)
}

/// Causes a retry does not cure: the cutover is called off at once rather than at the deadline.
fn lasting(c: Cause) -> bool {
    !matches!(
        c,
        Cause::StoreUnreachable | Cause::StoreStalled | Cause::Timeout | Cause::Other
    )
}

/// How long a pod may show no sign of a stage request before it is asked again.
const NUDGE_AFTER: Duration = Duration::from_secs(3);

/// Until every pod in `told` reports `digest` staged (or live). Pods deleted meanwhile do not
/// count: a pod that starts later takes the release from the ConfigMap.
fn wait_staged(
    t: &dyn Target,
    app: &AppName,
    digest: &Digest,
    told: &[String],
    timeout_s: u64,
) -> Result<Vec<PodStatus>> {
    let t0 = Instant::now();
    let mut asked = Instant::now();
    loop {
        let pods = t.statuses(app)?;
        let mut waiting = Vec::new();
        let mut unaware = Vec::new();
        let mut failed = Vec::new();
        for name in told {
            let Some(p) = pods.iter().find(|p| &p.pod == name) else {
                continue;
            };
            let Some(s) = &p.status else {
                waiting.push(format!(
                    "{name}: status unreadable: {}",
                    p.error.as_deref().unwrap_or("?")
                ));
                continue;
            };
            if s.staged == Some(*digest) || s.digest == Some(*digest) {
                continue;
            }
            match (&s.last_error, s.consecutive_failures) {
                (Some(e), n) if n > 0 => {
                    let cause = s.last_error_cause.unwrap_or(Cause::Other);
                    let why = format!("{name}: {cause}: {e}");
                    if lasting(cause) {
                        failed.push(why);
                    } else {
                        waiting.push(why);
                    }
                }
                _ => {
                    waiting.push(format!("{name}: not staged yet"));
                    unaware.push(name.clone());
                }
            }
        }
        // A stage takes a fetch of a few KiB; a pod silent for seconds most likely never saw
        // the request (its volume not refreshed), so ask it again: a new value is a change.
        if !unaware.is_empty() && asked.elapsed() > NUDGE_AFTER {
            t.stage(app, Some(*digest), &unaware)?;
            asked = Instant::now();
        }
        let abort = |n: usize, reasons: &[String]| {
            anyhow::anyhow!(
                "cutover of {app} to {} called off: {n} of {} pod(s) could not stage it: {}; \
                 no pod switched, each keeps serving its current release (fix the cause and run \
                 the command again, or pass --no-barrier to switch the pods that can)",
                digest.short(),
                told.len(),
                reasons.join("; ")
            )
        };
        if !failed.is_empty() {
            return Err(abort(failed.len(), &failed));
        }
        if waiting.is_empty() {
            return Ok(pods);
        }
        if t0.elapsed() > Duration::from_secs(timeout_s) {
            let mut e = abort(waiting.len(), &waiting);
            e = e.context(format!("not staged within --stage-timeout {timeout_s}s"));
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unix ms on this machine (the pods' timestamps are on theirs: on a multi-node cluster the
/// trace is as good as the clocks' agreement).
pub use aether_artifact::unix_now_ms as now_ms;

/// Requests the app every 5 ms while a reload runs: the first good answer after the last pod
/// switched, and any request that failed meanwhile.
struct Probe {
    stop: Arc<AtomicBool>,
    shots: Arc<Mutex<Vec<Shot>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A reload that fails must not leave the probe requesting the app (`dev` goes on).
impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Probe {
    fn start(url: String) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let shots = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), shots.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let sent = now_ms();
                let ok = attohttpc::get(&url)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .is_ok_and(|r| r.is_success());
                out.lock().unwrap().push((sent, now_ms(), ok));
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Probe {
            stop,
            shots,
            thread: Some(thread),
        }
    }

    /// Stops once a request sent at or after `from` (unix ms) was answered well, or after 2 s.
    fn stop_after(self, from: u64) -> Vec<Shot> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2)
            && !self
                .shots
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.2 && s.0 >= from)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let shots = self.shots.clone();
        drop(self);
        let taken = std::mem::take(&mut *shots.lock().unwrap());
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_artifact::{FetchTrace, RunnerStatus, Status};

    fn d(c: char) -> Digest {
        Digest::parse(&c.to_string().repeat(64)).unwrap()
    }

    fn pod(name: &str, seen: u64, published: u64, switched: u64) -> PodStatus {
        PodStatus {
            pod: name.into(),
            url: None,
            status: Some(Status {
                digest: Some(d('a')),
                seen_at_ms: Some(seen),
                published_at_ms: Some(published),
                fetch: Some(FetchTrace {
                    digest: d('a'),
                    seen_at_ms: seen,
                    download_ms: 5,
                    verify_extract_ms: 2,
                    ready_at_ms: seen + 7,
                    bytes: 100,
                }),
                runner: Some(RunnerStatus {
                    digest: Some(d('a')),
                    switched_at_ms: Some(switched),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            error: None,
        }
    }

    /// The critical path: each stage ends when its slowest pod ends it; the spread is first to
    /// last switch; the first response is the first good answer after the last switch.
    #[test]
    fn a_trace_follows_the_slowest_pod() {
        let r = Release::default().next(d('a')).unwrap();
        let marks = vec![(Stage::Start, 1000), (Stage::Signal, 1100)];
        let pods = [pod("p1", 1400, 1410, 1450), pod("p2", 1500, 1510, 1560)];
        let probes = [
            (1200, 1201, true),
            (1300, 1302, false),
            (1555, 1556, true),
            (1561, 1563, true),
        ];
        let t = Trace::new(&r, marks, &pods, &probes, false);
        let got: Vec<(Stage, u64)> = t.stages.iter().map(|s| (s.stage, s.ms)).collect();
        assert_eq!(
            got,
            [
                (Stage::Signal, 100),
                (Stage::Seen, 400),
                (Stage::Download, 5),
                (Stage::VerifyExtract, 2),
                (Stage::Swap, 3),
                (Stage::AppReady, 50),
                (Stage::FirstResponse, 3),
            ]
        );
        assert_eq!(t.total_ms, 563);
        assert_eq!(t.spread_ms, Some(110));
        assert_eq!((t.requests, t.failed_requests), (4, 1));
        let line = t.line();
        assert!(
            line.starts_with("trace aaaaaaaaaaaa gen 1 (2 pods): signal 100 ms · seen 400 ms"),
            "{line}"
        );
        assert!(
            line.ends_with("= 563 ms; replicas switched within 110 ms; 1 of 4 requests failed"),
            "{line}"
        );
    }
}
