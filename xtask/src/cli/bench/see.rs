//! The live page and `debug` (on the local target, and with `--cluster` on the cluster): how soon after `hot-patch --wait` returns the
//! page's event stream carries the reload (as a browser receives it, through HTTP), against a
//! `hot-status` run started at the same moment to see the same; and how long `debug` takes to
//! put node's inspector into the running app and take it out, against a plain hot-patch.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use xshell::{cmd, Shell};

use super::*;
use crate::ops::reload::CutoverArgs;

pub(super) fn run(sh: &Shell, work: &Path, cycles: usize) -> Result<()> {
    let (global, local, app, dir) = edit::local_sample(sh, work, "bench-ui")?;
    let open = crate::ops::ui::Opener::new(
        crate::targets::Kind::Local,
        crate::manifests::NAMESPACE,
        global,
    );
    let result = measure(sh, &*local, open, &app, &dir, cycles);
    local.down(&app)?;
    result
}

/// The figures on any target, for an app deployed from `dir` (the sample) that `open` reaches.
pub(super) fn measure(
    sh: &Shell,
    local: &dyn crate::targets::Target,
    open: crate::ops::ui::Opener,
    app: &aether_artifact::AppName,
    dir: &Path,
    cycles: usize,
) -> Result<()> {
    let global = &open.global.clone();
    let d1 = local
        .release(app)?
        .and_then(|r| r.digest)
        .context("no release")?;
    let args = CutoverArgs {
        stage_timeout: 60,
        ..Default::default()
    };
    // A second release: the sample with one line of its own.
    let src = dir.join("server.js");
    let text = std::fs::read_to_string(&src)?;
    std::fs::write(
        &src,
        format!("{text}// the page's bench {}\n", std::process::id()),
    )?;
    let store = local.store()?;
    crate::ops::cycle::cycle(local, &store, global, app, dir, Instant::now(), &args)?;
    std::fs::write(&src, text)?;
    let d2 = local
        .release(app)?
        .and_then(|r| r.digest)
        .context("no release")?;
    let (kind, namespace) = (open.kind, open.args.namespace.clone());
    let page = crate::ops::ui::start(open, std::slice::from_ref(app), 0)?;
    let reloads = subscribe(&page.url)?;
    let xtask = std::env::current_exe()?;
    let project = global.project_dir.clone().unwrap_or_default();
    // The page's first poll is the state it starts from: a patch before it would be no reload.
    let g0 = local.release(app)?.unwrap_or_default().generation;
    next(&reloads, "fleet", g0)?;
    let (mut shown, mut status, mut patch) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..cycles {
        let d = if i % 2 == 0 { d1 } else { d2 };
        let t0 = Instant::now();
        let o = crate::ops::reload::patch(local, app, d, Some(Duration::from_secs(30)), &args)?
            .context("nothing changed")?;
        let returned = Instant::now();
        patch.push(returned - t0);
        let g = o.published.release.generation;
        // What a developer without the page runs to see the same.
        let _env = sh.push_env("AETHER_PROJECT_DIR", &project);
        let _target = sh.push_env("AETHER_TARGET", format!("{kind:?}").to_lowercase());
        let _ns = sh.push_env("AETHER_NAMESPACE", &namespace);
        let app_s = app.as_str();
        cmd!(sh, "{xtask} hot-status {app_s}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()?;
        status.push(returned.elapsed());
        let at = next(&reloads, "reload", g)?;
        shown.push(at.saturating_duration_since(returned));
        std::thread::sleep(supervisor::PAUSE);
    }
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    let pod = local.pods(app)?.into_iter().next().context("no pod")?;
    for _ in 0..cycles.min(10) {
        let t0 = Instant::now();
        let a = crate::ops::inspector::attach(local, app, None, Duration::from_secs(30))?;
        attach.push(t0.elapsed());
        drop(a);
        // A developer's pause, as between the hot-patches: the standby node boots meanwhile.
        std::thread::sleep(supervisor::PAUSE);
        let t1 = Instant::now();
        crate::ops::inspector::detach(local, app, &pod, Duration::from_secs(30))?;
        detach.push(t1.elapsed());
        std::thread::sleep(supervisor::PAUSE);
    }
    for v in [
        &mut shown,
        &mut status,
        &mut patch,
        &mut attach,
        &mut detach,
    ] {
        v.sort();
    }
    println!();
    let pods = local.pods(app)?.len();
    println!(
        "the live page and debug, {} target, {pods} pod(s), {cycles} hot-patches of the sample",
        local.name()
    );
    println!(
        "  page shows the reload, after `hot-patch --wait` returned: {}",
        p50_p95(&shown)
    );
    println!(
        "  `hot-status` to see the same, started at that moment:    {}",
        p50_p95(&status)
    );
    println!(
        "  hot-patch --wait itself:                                 {}",
        p50_p95(&patch)
    );
    println!(
        "  debug: inspector answering (switch + /json/list):        {}",
        p50_p95(&attach)
    );
    println!(
        "  debug: back without it (switch):                         {}",
        p50_p95(&detach)
    );
    Ok(())
}

/// When the next `kind` event of generation `g` arrived.
fn next(rx: &mpsc::Receiver<(String, u64, Instant)>, kind: &str, g: u64) -> Result<Instant> {
    loop {
        let (k, gen, at) = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("the page never showed generation {g} ({kind})"))?;
        if k == kind && gen == g {
            return Ok(at);
        }
    }
}

/// The page's event stream, read as a browser reads it: each `reload` event's generation, and
/// each `fleet` event's wanted generation, and when it arrived.
fn subscribe(url: &str) -> Result<mpsc::Receiver<(String, u64, Instant)>> {
    let html = attohttpc::get(url).send()?.text()?;
    let token = html
        .split("name=\"aether-token\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("the page carries no token")?
        .to_string();
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = TcpStream::connect(&host)?;
    write!(
        s,
        "GET /events?token={token} HTTP/1.1\r\nHost: {host}\r\n\r\n"
    )?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(s);
        let mut event = String::new();
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            let l = line.trim_end();
            if let Some(e) = l.strip_prefix("event: ") {
                event = e.to_string();
            } else if let Some(d) = l.strip_prefix("data: ") {
                let v: serde_json::Value = serde_json::from_str(d).unwrap_or_default();
                let g = match event.as_str() {
                    "reload" => v["generation"].as_u64(),
                    "fleet" => v["desired"]["generation"].as_u64(),
                    _ => None,
                };
                if let Some(g) = g {
                    if tx.send((event.clone(), g, Instant::now())).is_err() {
                        return;
                    }
                }
            }
            line.clear();
        }
    });
    Ok(rx)
}
