//! `logs -f` across replicas on the real cluster: lines of all three pods, merged in time
//! order, and a replacement pod picked up without restarting the command.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use super::*;

/// The kubelet's RFC 3339 time with its fraction padded, so string order is time order.
fn time_key(at: &str) -> String {
    let body = at.trim_end_matches('Z');
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    format!("{secs}.{frac:0<9}")
}

struct Follower {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Follower {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
    fn pods(&self) -> std::collections::BTreeSet<String> {
        self.lines()
            .iter()
            .filter_map(|l| Some(l.split_once(" [")?.1.split_once("] ")?.0.to_string()))
            .collect()
    }
}

fn pod_names(ns: &Ns) -> Vec<String> {
    ns.k(&[
        "get",
        "pods",
        "-l",
        "aether.dev/app=demo",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
    .ok()
    .stdout
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn logs_follow_every_replica_in_order_and_picks_up_a_replacement() {
    let ns = Ns::new("logs");
    let dir = ns.project.path().join("src-logs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("server.js"),
        "const http = require('http');\n\
         console.log('started on ' + require('os').hostname());\n\
         http.createServer((q, r) => r.end('ok\\n')).listen(process.env.PORT || 3000);\n",
    )
    .unwrap();
    ns.x(&[
        "deploy-sample",
        "demo",
        dir.to_str().unwrap(),
        "--replicas",
        "3",
    ])
    .ok();
    let before = pod_names(&ns);
    assert_eq!(before.len(), 3, "{before:?}");

    let mut c = ns.command(&["logs", "demo", "-f", "--timestamps"]);
    // A window wide enough for a busy machine: order is what is checked, not speed.
    c.env("AETHER_LOGS_HOLD_MS", "3000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    let f = Follower { child, lines };

    let want: std::collections::BTreeSet<String> = before.iter().cloned().collect();
    aether_testkit::wait_for(
        "lines from all three pods",
        PATIENCE * 2,
        || want.is_subset(&f.pods()),
        || f.lines(),
    );

    // A replacement pod is followed by the same command.
    ns.k(&["delete", "pod", &before[0], "--wait=false"]).ok();
    let fresh = aether_testkit::wait_until("the replacement pod", PATIENCE * 2, || {
        pod_names(&ns)
            .into_iter()
            .find(|p| !before.contains(p))
            .ok_or(())
    });
    aether_testkit::wait_for(
        "lines from the replacement pod",
        PATIENCE * 3,
        || f.pods().contains(&fresh),
        || f.lines(),
    );
    let lines = f.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("[{fresh}] started on {fresh}"))),
        "{lines:#?}"
    );
    let times: Vec<String> = lines
        .iter()
        .map(|l| time_key(l.split_once(' ').unwrap().0))
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "lines out of time order: {lines:#?}");
    drop(f);
    ns.x(&["down", "demo"]).ok();
}
