//! What feeds the page: per app, one loop polling the release and the pods' statuses (a fleet
//! event when anything changed; a reload's trace once every pod serves a new generation) and
//! one follower per log (app and fetcher).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use aether_artifact::AppName;
use anyhow::Result;
use serde_json::json;
use xshell::Shell;

use super::{Hub, Opener};
use crate::ops::fleet::Fleet;
use crate::ops::reload::{now_ms, Shot, Stage, Trace};
use crate::release::Release;
use crate::targets::{PodStatus, Target};

/// Probe shots kept: the span of the longest reload the page reports requests for.
const SHOTS: usize = 600;
/// A reload not served everywhere after this long gets no waterfall (the fleet shows why).
const GIVE_UP: Duration = Duration::from_secs(120);

/// A new release the page saw, until every pod serves it.
struct Pending {
    release: Release,
    since: Instant,
    /// Where the app answers, looked up once per reload (a Service GET on a cluster).
    url: Option<String>,
}

/// Polls `app` for ever, sending `fleet`, `releases` and `reload` events.
pub fn fleet(hub: &Hub, open: &Opener, app: &AppName) -> Result<()> {
    let sh = Shell::new()?;
    let t = open.open(&sh);
    let mut seen_generation: Option<u64> = None;
    let mut pending: Option<Pending> = None;
    let mut shots: VecDeque<Shot> = VecDeque::new();
    releases(hub, &*t, app);
    loop {
        let began = Instant::now();
        let desired = t.release(app)?.unwrap_or_default();
        let (pods, error) = match t.statuses(app) {
            Ok(p) => (p, None),
            Err(e) => (Vec::new(), Some(format!("{e:#}"))),
        };
        hub.send(
            "fleet",
            json!({
                "app": app.as_str(),
                "target": t.name(),
                "desired": desired,
                "fleet": Fleet::of(&desired, &pods),
                "pods": pods,
                "error": error,
            }),
        );
        if seen_generation != Some(desired.generation) {
            // The generation the page found is the state it starts from, not a reload it saw.
            if seen_generation.is_some() && desired.digest.is_some() {
                pending = Some(Pending {
                    release: desired.clone(),
                    since: Instant::now(),
                    url: t.url(app).ok().flatten(),
                });
            }
            seen_generation = Some(desired.generation);
        }
        let mut done = false;
        if let Some(p) = &pending {
            // The app is asked only while a reload is under way: a steady probe would fill a
            // request log and count in the app's own counters.
            if let Some(url) = &p.url {
                shots.push_back(probe(url));
                if shots.len() > SHOTS {
                    shots.pop_front();
                }
            }
            if let Some(trace) = observed(&p.release, &pods, &shots) {
                if !hub.has_reload(app.as_str(), p.release.generation) {
                    hub.send("reload", reload_event(app, "observed", &trace));
                }
                // After the trace: the history the rollback list shows changed with it.
                releases(hub, &*t, app);
                done = true;
            }
            // Not everywhere after this long: the fleet view says why; the probe stops.
            done |= p.since.elapsed() > GIVE_UP;
        }
        if done {
            pending = None;
        }
        // pace: the target's poll interval; a poll that takes longer (a cluster's API calls)
        // waits four times its own time, so the page never takes a core's fifth.
        std::thread::sleep(t.status_poll().max(4 * began.elapsed()));
    }
}

/// The page's JSON for a reload's trace.
pub fn reload_event(app: &AppName, source: &str, trace: &Trace) -> serde_json::Value {
    json!({
        "app": app.as_str(),
        "generation": trace.generation,
        "source": source,
        "at_ms": now_ms(),
        "trace": trace,
    })
}

/// The trace of `rel` as the pods report it, once every pod serves it: its origin is the first
/// pod seeing the release (the command's own stages are only in its own trace). The page's
/// probe requests from then on are counted, failures marked.
fn observed(rel: &Release, pods: &[PodStatus], shots: &VecDeque<Shot>) -> Option<Trace> {
    let digest = rel.digest?;
    if pods.is_empty() || pods.iter().any(|p| p.behind(&digest).is_some()) {
        return None;
    }
    let origin = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.fetch.as_ref())
        .filter(|f| f.digest == digest)
        .map(|f| f.seen_at_ms)
        .min()
        .unwrap_or_else(now_ms);
    let mut trace = Trace::new(rel, vec![(Stage::Start, origin)], pods, &[], false);
    // Its fetch stages are the pods' either way; a cutover's own are only in its command's trace.
    trace.barrier = rel.activate_at.is_some();
    let during: Vec<&Shot> = shots.iter().filter(|s| s.0 >= origin).collect();
    trace.requests = during.len();
    trace.failed_requests = during.iter().filter(|s| !s.2).count();
    Some(trace)
}

/// One request to the app, as the reload's probe records it.
fn probe(url: &str) -> Shot {
    let sent = now_ms();
    let ok = attohttpc::get(url)
        .timeout(Duration::from_secs(1))
        .send()
        .is_ok_and(|r| r.is_success());
    (sent, now_ms(), ok)
}

/// Sends the releases a rollback may go to (newest first).
pub fn releases(hub: &Hub, t: &dyn Target, app: &AppName) {
    let listed = (|| {
        let cur = t.release(app)?.unwrap_or_default();
        let store = t.store()?;
        crate::ops::registry::recent(t.control()?.as_ref(), &store, app, &cur)
    })();
    let ev = match listed {
        Ok((list, source)) => json!({"app": app.as_str(), "source": source, "releases": list}),
        Err(e) => json!({"app": app.as_str(), "error": format!("{e:#}"), "releases": []}),
    };
    hub.send("releases", ev);
}

/// Follows the app's (or the fetcher's) log of every pod for ever.
pub fn logs(hub: &Hub, open: &Opener, app: &AppName, fetcher: bool) -> Result<()> {
    let sh = Shell::new()?;
    let t = open.open(&sh);
    let stream = if fetcher { "fetcher" } else { "app" };
    t.follow_logs(app, fetcher, &mut |l| {
        hub.send(
            "log",
            json!({"app": app.as_str(), "stream": stream, "pod": l.pod, "at": l.at, "text": l.text}),
        );
        true
    })
}
