//! `logs -f` on a cluster: every live pod's log, merged in time order and prefixed by pod,
//! following pods that come (a stream starts when a pod is listed) and go (its stream ends with
//! its container). `kubectl logs -f -l …` follows only the pods of its start, at most five.
//!
//! Lines are held for a short window (`AETHER_LOGS_HOLD_MS`, 500 ms) and written sorted by the
//! kubelet's timestamp, so streams that deliver at different speeds still come out in order;
//! a line later than the window is written at once, after the lines already out.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aether_artifact::AppName;
use anyhow::Result;

use super::Cluster;
use crate::targets::{LogLine, Target};

/// How often the pods are listed: a replacement pod is followed within about this long.
const LIST_EVERY: Duration = Duration::from_secs(1);
/// Lines a newly followed pod starts with.
const TAIL: u32 = 50;

/// The container whose log is followed.
pub fn container(fetcher: bool) -> &'static str {
    match fetcher {
        true => "aether-fetcher",
        false => "app",
    }
}

enum Msg {
    Line(LogLine),
    /// The stream of a pod ended (its container stopped, or kubectl could not start it yet).
    Ended(String),
}

/// Follows `container` of every live pod of `app` until `sink` returns `false`.
pub fn follow(
    c: &Cluster,
    app: &AppName,
    container: &str,
    sink: &mut dyn FnMut(LogLine) -> bool,
) -> Result<()> {
    let hold = std::env::var("AETHER_LOGS_HOLD_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_millis(500), Duration::from_millis);
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut following: HashSet<String> = HashSet::new();
    // The last time seen per pod: a stream that ended early resumes after it, not from the tail.
    let mut last: HashMap<String, String> = HashMap::new();
    let mut held: Vec<(Instant, LogLine)> = Vec::new();
    let mut next_list = Instant::now();
    loop {
        if Instant::now() >= next_list {
            for pod in c.pods(app)? {
                if following.contains(&pod) {
                    continue;
                }
                let child = c.kube.follow_pod_log(
                    &pod,
                    container,
                    last.get(&pod).map(String::as_str),
                    TAIL,
                )?;
                following.insert(pod.clone());
                let tx = tx.clone();
                std::thread::spawn(move || read(child, pod, tx));
            }
            next_list = Instant::now() + LIST_EVERY;
        }
        let wait = next_list
            .saturating_duration_since(Instant::now())
            .min(hold / 4);
        match rx.recv_timeout(wait) {
            Ok(Msg::Line(l)) => {
                let seen = last.entry(l.pod.clone()).or_default();
                if sort_key(&l.at) > sort_key(seen) {
                    *seen = l.at.clone();
                    held.push((Instant::now(), l));
                }
            }
            Ok(Msg::Ended(pod)) => {
                following.remove(&pod);
            }
            Err(_) => {}
        }
        if !flush(&mut held, hold, sink) {
            return Ok(());
        }
    }
}

fn read(mut child: std::process::Child, pod: String, tx: mpsc::Sender<Msg>) {
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let (at, text) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let l = LogLine {
                at: at.to_string(),
                pod: pod.clone(),
                text: text.to_string(),
            };
            if tx.send(Msg::Line(l)).is_err() {
                let _ = child.kill();
                return;
            }
        }
    }
    let _ = child.wait();
    let _ = tx.send(Msg::Ended(pod));
}

/// Hands `sink` the lines held longer than `hold`, in time order; `false` when it wants no more.
fn flush(
    held: &mut Vec<(Instant, LogLine)>,
    hold: Duration,
    sink: &mut dyn FnMut(LogLine) -> bool,
) -> bool {
    let (mut due, keep): (Vec<_>, Vec<_>) = held.drain(..).partition(|(t, _)| t.elapsed() >= hold);
    *held = keep;
    due.sort_by_key(|(_, l)| sort_key(&l.at));
    due.into_iter().all(|(_, l)| sink(l))
}

/// The kubelet writes RFC 3339 with trailing zeros of the fraction dropped; with the fraction
/// padded to nanoseconds, string order is time order.
pub fn sort_key(at: &str) -> String {
    let Some(body) = at.strip_suffix('Z') else {
        return at.to_string();
    };
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    format!("{secs}.{frac:0<9}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_times_sort_as_times() {
        let a = "2026-12-03T07:10:00.12Z";
        let b = "2026-12-03T07:10:00.123456789Z";
        let c = "2026-12-03T07:10:00Z";
        assert!(a > b, "as strings the shorter fraction sorts last");
        assert!(sort_key(a) < sort_key(b));
        assert!(
            sort_key(c) < sort_key(a),
            "a whole second sorts before its fractions"
        );
        assert!("2026-12-03T07:10:00.9Z" > "2026-12-03T07:10:00.10Z");
        assert!(sort_key("2026-12-03T07:10:00.9Z") > sort_key("2026-12-03T07:10:00.10Z"));
    }

    #[test]
    fn held_lines_come_out_in_time_order() {
        let line = |at: &str, pod: &str| {
            (
                Instant::now() - Duration::from_secs(1),
                LogLine {
                    at: at.into(),
                    pod: pod.into(),
                    text: format!("from {pod}"),
                },
            )
        };
        let mut held = vec![
            line("2026-12-03T07:10:00.3Z", "b"),
            line("2026-12-03T07:10:00.1Z", "a"),
            (
                Instant::now(),
                LogLine {
                    at: "2026-12-03T07:10:00.0Z".into(),
                    pod: "c".into(),
                    text: "late".into(),
                },
            ),
        ];
        let mut out = Vec::new();
        assert!(flush(&mut held, Duration::from_millis(500), &mut |l| {
            out.push(format!("[{}] {}", l.pod, l.text));
            true
        }));
        assert_eq!(out, ["[a] from a", "[b] from b"]);
        assert_eq!(held.len(), 1, "a line inside the window waits");
    }
}
