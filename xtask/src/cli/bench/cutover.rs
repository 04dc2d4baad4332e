//! `bench --cluster`, second part: the app scaled to three replicas, hot-patches with the
//! barrier and without it, interleaved so both see the same machine; then one replica cut off
//! from the store (root and iptables), where the barrier must switch no replica at all.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::p50_p95;

pub const REPLICAS: usize = 3;

pub struct Figures {
    cycles: usize,
    /// Per mode (barrier, no barrier): first → last replica switching, and hot-patch → served
    /// everywhere (the trace's total).
    spread: [Vec<Duration>; 2],
    total: [Vec<Duration>; 2],
    failed: [(u64, u64); 2],
    fault: Option<Fault>,
}

struct Fault {
    called_off_after: Duration,
    named: bool,
    switched: usize,
}

/// `x` runs this xtask against the bench's namespace and project.
pub fn measure(
    x: &dyn Fn(&[&str]) -> Result<Output>,
    dir: &Path,
    project: &Path,
    ns: &str,
    cycles: usize,
) -> Result<Figures> {
    let ok = |args: &[&str]| super::succeeded(args, x(args)?);
    let replicas = REPLICAS.to_string();
    ok(&[
        "deploy-sample",
        "demo",
        dir.to_str().context("a UTF-8 path")?,
        "--replicas",
        &replicas,
    ])?;
    let src = dir.join("server.js");
    let text = std::fs::read_to_string(&src)?;
    let upload = |version: &str| -> Result<String> {
        // Whatever version the first part of the bench left in the file: a new one each time.
        let edited: String = text
            .lines()
            .map(|l| match l.starts_with("const VERSION = ") {
                true => format!("const VERSION = '{version}';\n"),
                false => format!("{l}\n"),
            })
            .collect();
        anyhow::ensure!(
            edited != text,
            "no `const VERSION = ` line in {}",
            src.display()
        );
        std::fs::write(&src, edited)?;
        let out = ok(&["hot-upload", "demo", dir.to_str().unwrap_or_default()])?;
        out.lines()
            .rev()
            .find_map(|l| l.strip_prefix("digest="))
            .map(String::from)
            .context("no digest= from hot-upload")
    };
    let mut f = Figures {
        cycles,
        spread: [Vec::new(), Vec::new()],
        total: [Vec::new(), Vec::new()],
        failed: [(0, 0); 2],
        fault: None,
    };
    for i in 0..cycles * 2 {
        let mode = i % 2;
        let digest = upload(&format!("cutover-{i}"))?;
        let flag = if mode == 0 {
            "--barrier"
        } else {
            "--no-barrier"
        };
        let out = ok(&["hot-patch", "demo", &digest, flag, "--wait", "90", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let t = &v["trace"];
        let ms = |k: &str| Duration::from_millis(t[k].as_u64().unwrap_or_default());
        f.spread[mode].push(ms("spread_ms"));
        f.total[mode].push(ms("total_ms"));
        f.failed[mode].0 += t["failed_requests"].as_u64().unwrap_or_default();
        f.failed[mode].1 += t["requests"].as_u64().unwrap_or_default();
    }
    for v in f.spread.iter_mut().chain(f.total.iter_mut()) {
        v.sort();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        f.fault = Some(fault(x, project, ns, &upload("cut-off")?)?);
    }
    Ok(f)
}

/// One replica's traffic to the store is refused; the cutover must be called off naming it,
/// with every replica still on the release it served.
fn fault(
    x: &dyn Fn(&[&str]) -> Result<Output>,
    project: &Path,
    ns: &str,
    digest: &str,
) -> Result<Fault> {
    let kubectl = |args: &[&str]| -> Result<String> {
        let out = Command::new("kubectl")
            .arg("-n")
            .arg(ns)
            .args(args)
            .output()?;
        anyhow::ensure!(out.status.success(), "kubectl {args:?} failed");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let pods = kubectl(&[
        "get",
        "pods",
        "-l",
        "aether.dev/app=demo",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{\"\\n\"}{end}",
    ])?;
    let (victim, ip) = pods
        .lines()
        .find_map(|l| l.split_once(' '))
        .context("no pod")?;
    let store: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.join(".aether/local/store.json"))?)?;
    let port = store["port"].as_u64().context("no store port")?.to_string();
    let rule = [
        "INPUT",
        "-s",
        ip,
        "-p",
        "tcp",
        "--dport",
        &port,
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ];
    let inserted = Command::new("iptables").arg("-I").args(rule).status()?;
    anyhow::ensure!(inserted.success(), "iptables -I failed");
    let before = statuses(x)?;
    let t0 = Instant::now();
    let out = x(&[
        "hot-patch",
        "demo",
        digest,
        "--wait",
        "90",
        "--stage-timeout",
        "10",
    ]);
    let called_off_after = t0.elapsed();
    let _ = Command::new("iptables").arg("-D").args(rule).status();
    let out = out?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let after = statuses(x)?;
    let switched = after
        .iter()
        .filter(|(pod, d)| before.iter().any(|(p, b)| p == pod && b != d))
        .count();
    Ok(Fault {
        called_off_after,
        named: !out.status.success() && stderr.contains(victim) && stderr.contains("called off"),
        switched,
    })
}

/// (pod, the digest its app runs) for every pod.
fn statuses(x: &dyn Fn(&[&str]) -> Result<Output>) -> Result<Vec<(String, String)>> {
    let out = x(&["hot-status", "demo", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["pods"]
        .as_array()
        .context("no pods in hot-status")?
        .iter()
        .map(|p| {
            (
                p["pod"].as_str().unwrap_or_default().to_string(),
                p["runner"]["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect())
}

impl Figures {
    pub fn print(&self) {
        println!();
        println!(
            "cutover across {REPLICAS} replicas, real cluster, {} hot-patches each way, interleaved",
            self.cycles
        );
        println!(
            "  first → last replica switching: barrier {}; no barrier {} (goal with the barrier ≤ 50 ms)",
            p50_p95(&self.spread[0]),
            p50_p95(&self.spread[1])
        );
        println!(
            "  hot-patch → served everywhere: barrier {}; no barrier {}",
            p50_p95(&self.total[0]),
            p50_p95(&self.total[1])
        );
        println!(
            "  requests that failed meanwhile (a client every 5 ms): barrier {} of {}, no barrier {} of {}",
            self.failed[0].0, self.failed[0].1, self.failed[1].0, self.failed[1].1
        );
        match &self.fault {
            Some(f) => println!(
                "  one replica cut off from the store: called off after {:.1} s ({}), replicas switched: {} of {REPLICAS}",
                f.called_off_after.as_secs_f64(),
                if f.named { "naming the pod" } else { "NOT naming the pod" },
                f.switched
            ),
            None => println!("  one replica cut off from the store: skipped (needs root for iptables)"),
        }
    }
}
