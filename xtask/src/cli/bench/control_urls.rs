//! `bench`, control plane: a release reaching 50 pods at once, i.e. 50 fetchers asking the local
//! `aether-control` (optimised build, SQLite, the embedded store) for the URLs of one fetch
//! (artifact, provenance, signature) at the same moment, round after round, each request timed;
//! against one fetcher asking alone in the same run. Then the same 50 asking back to back with
//! no pause (saturation: the bench's own 50 client threads share the 2 cores with the server),
//! and registrations one after another.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use aether_artifact::control::{Client, Register};
use aether_artifact::{object_key, AppName, Digest};
use anyhow::{Context, Result};
use xshell::{cmd, Shell};

/// "p50 X ms, p95 Y ms, p99 Z ms" with a tenth of a millisecond: these are small.
fn pcts(sorted: &[Duration]) -> String {
    let at =
        |p: f64| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    format!(
        "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        at(0.5),
        at(0.95),
        at(0.99)
    )
}

const FETCHERS: usize = 50;
/// Requests per fetch: the artifact, its provenance record, its signature.
const PER_FETCH: usize = 3;
const ROUNDS: usize = 20;

pub fn run(sh: &Shell, work: &std::path::Path) -> Result<()> {
    release_control(sh)?;
    let dir = work.join("control");
    let store = crate::embedded::ensure(&dir, None)?
        .partial()
        .finish()
        .map_err(anyhow::Error::msg)?;
    let ctl = crate::embedded_control::ensure(sh, &dir, &store, true)?;
    let result = measure(&ctl);
    crate::embedded_control::stop(&dir)?;
    crate::embedded::stop(&dir)?;
    result
}

fn measure(ctl: &crate::embedded_control::Running) -> Result<()> {
    let apps: Vec<AppName> = (0..5)
        .map(|i| AppName::parse(&format!("app{i}")))
        .collect::<Result<_, _>>()?;
    let digest = Digest::parse(&"a".repeat(64))?;
    let ask = |client: &Client, app: &AppName| -> Result<Duration> {
        let t = Instant::now();
        let got = client.read_urls(app, &[object_key(app, &digest)])?;
        anyhow::ensure!(got.urls.len() == 1, "no URL in the answer");
        Ok(t.elapsed())
    };
    let client =
        |app: &AppName| Client::with_token(&ctl.url, ctl.pod_token(app), Duration::from_secs(10));

    let alone = client(&apps[0]);
    ask(&alone, &apps[0])?;
    let mut solo: Vec<Duration> = (0..ROUNDS * PER_FETCH * 3)
        .map(|_| ask(&alone, &apps[0]))
        .collect::<Result<_>>()?;
    solo.sort();

    // `rounds` times: all 50 start together (a barrier), each asks `per_round` URLs in turn.
    let together = |rounds: usize, per_round: usize| -> Result<(Vec<Duration>, Duration)> {
        let start = Arc::new(Barrier::new(FETCHERS));
        let t0 = Instant::now();
        let mut all: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..FETCHERS)
                .map(|i| {
                    let (start, app) = (start.clone(), &apps[i % apps.len()]);
                    let c = client(app);
                    let ask = &ask;
                    s.spawn(move || -> Result<Vec<Duration>> {
                        let mut got = Vec::new();
                        for _ in 0..rounds {
                            start.wait();
                            for _ in 0..per_round {
                                got.push(ask(&c, app)?);
                            }
                        }
                        Ok(got)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a bench thread panicked"))
                .collect::<Result<Vec<Vec<Duration>>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        all.sort();
        Ok((all, t0.elapsed()))
    };
    let (burst, _) = together(ROUNDS, PER_FETCH)?;
    let (all, wall) = together(1, ROUNDS * PER_FETCH)?;

    let admin = ctl.client();
    let mut reg: Vec<Duration> = (0..50u32)
        .map(|i| {
            let d = Digest::parse(&format!("{i:064x}"))?;
            let t = Instant::now();
            admin.register(&apps[0], &record(&apps[0], d))?;
            Ok(t.elapsed())
        })
        .collect::<Result<_>>()?;
    reg.sort();

    println!();
    println!("control plane (aether-control, local: SQLite, optimised build)");
    println!(
        "  read URL, one fetcher alone:        {} ({} requests)",
        pcts(&solo),
        solo.len()
    );
    println!(
        "  read URL, {FETCHERS} fetchers at once:      {} ({} requests: {ROUNDS} releases to {FETCHERS} pods, {PER_FETCH} URLs each; target p95 ≤ 20 ms)",
        pcts(&burst),
        burst.len(),
    );
    println!(
        "  contention ratio (p95 at {FETCHERS} / p95 alone): {:.1}",
        burst[burst.len() * 95 / 100].as_secs_f64() / solo[solo.len() * 95 / 100].as_secs_f64()
    );
    println!(
        "  saturation, {FETCHERS} asking back to back:  {} ({} requests, {:.0}/s)",
        pcts(&all),
        all.len(),
        all.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "  register an upload (SQLite, one at a time): {}",
        pcts(&reg)
    );
    Ok(())
}

fn record(app: &AppName, digest: Digest) -> Register {
    let provenance = serde_json::json!({
        "schema": aether_artifact::provenance::SCHEMA, "app": app.as_str(), "digest": digest,
        "layers": [], "entry_point": "server.js", "source": {"dir": "bench", "git": null},
        "tool": {"name": "aether-dev", "version": env!("CARGO_PKG_VERSION")},
        "built_by": "bench", "created_at": "2026-12-03T00:00:00Z",
    })
    .to_string();
    Register {
        digest,
        deps: None,
        bytes: 1,
        published_by: "bench".into(),
        git_commit: None,
        provenance,
        signature: None,
    }
}

/// The control plane as a cluster runs it: an optimised build.
fn release_control(sh: &Shell) -> Result<()> {
    if std::env::var_os("AETHER_CONTROL_BIN").is_none() {
        let _dir = sh.push_dir(crate::project_root());
        cmd!(sh, "cargo build --quiet --release --package aether-control")
            .run()
            .context("building aether-control")?;
        std::env::set_var(
            "AETHER_CONTROL_BIN",
            crate::target_dir().join("release").join("aether-control"),
        );
    }
    Ok(())
}
