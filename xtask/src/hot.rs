//! `hot-patch`, `rollback`, `hot-status`, `logs`, `down`: change or inspect what a running app
//! serves, without restarting its pod.

use std::time::Duration;

use aether_artifact::{AppName, Digest};
use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::cluster::Cluster;
use crate::config::Global;
use crate::local::{self, Local};
use crate::release::Release;
use crate::target::{Target, TargetArgs};

pub fn patch(
    sh: &Shell,
    global: &Global,
    target: &TargetArgs,
    app: &AppName,
    digest: Digest,
    wait: Option<Duration>,
) -> Result<()> {
    let t = target.resolve(sh);
    if t != Target::Local {
        return Cluster::new(sh, global, target, t).hot_patch(app, digest, wait);
    }
    let local = Local::new(global);
    let store = local.store()?;
    // Refuse before anything changes: a digest the fetcher cannot fetch would only fail later.
    crate::upload::require_in_store(&store, app, &digest)?;
    let current = local.release(app)?;
    let Some(next) = current.next_or_say(app, digest) else {
        return Ok(());
    };
    apply(&local, app, &next, wait)
}

pub fn rollback(
    sh: &Shell,
    global: &Global,
    target: &TargetArgs,
    app: &AppName,
    to: Option<Digest>,
    wait: Option<Duration>,
) -> Result<()> {
    let t = target.resolve(sh);
    if t != Target::Local {
        return Cluster::new(sh, global, target, t).rollback(app, to, wait);
    }
    let local = Local::new(global);
    let current = local.release(app)?;
    let dest = current.rollback_target(to)?;
    crate::upload::require_in_store(&local.store()?, app, &dest)?;
    let next = current.rollback_to(app, dest);
    apply(&local, app, &next, wait)
}

fn apply(local: &Local, app: &AppName, next: &Release, wait: Option<Duration>) -> Result<()> {
    let before = local.app_pids(app);
    local.set_release(app, next)?;
    let digest = next.digest.expect("a release always names a digest");
    match local.pod(app) {
        Some(p) => eprintln!("signalled local pod of {app} (fetcher pid {}): {} generation {}", p.fetcher_pid, digest.short(), next.generation),
        None => eprintln!("release {app}: {} generation {}; no local pod is running (`cargo xtask deploy-sample {app}` starts one)", digest.short(), next.generation),
    }
    if let (Some(w), Some(_)) = (wait, local.pod(app)) {
        local.wait_served(app, &digest, &before, w)?;
        eprintln!("{app} is serving {}", digest.short());
    }
    println!("generation={}", next.generation);
    println!("digest={digest}");
    Ok(())
}

#[derive(serde::Serialize)]
struct HotStatus<'a> {
    app: String,
    target: &'a str,
    desired: &'a Release,
    pods: &'a [serde_json::Value],
}

pub fn status(
    sh: &Shell,
    global: &Global,
    target: &TargetArgs,
    app: &AppName,
    json: bool,
) -> Result<()> {
    let t = target.resolve(sh);
    if t != Target::Local {
        return Cluster::new(sh, global, target, t).status(app, json);
    }
    let local = Local::new(global);
    let desired = local.release(app)?;
    let mut pods = Vec::new();
    if let Some(p) = local.pod(app) {
        // The same command `kubectl exec` runs in a pod.
        let fetcher = local::fetcher_bin(sh)?;
        let root = local.work_dir(app);
        let out = cmd!(sh, "{fetcher} status --root {root}")
            .quiet()
            .ignore_stderr()
            .read()
            .unwrap_or_default();
        let mut v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or(serde_json::json!({"error": "no status yet"}));
        v["pod"] = serde_json::json!(format!("local-{}", p.fetcher_pid));
        v["url"] = serde_json::json!(format!("http://127.0.0.1:{}/", p.app_port));
        pods.push(v);
    }
    print_status(app, "local", &desired, &pods, json)
}

/// The wanted release and, per pod, what its fetcher reports; shared by every target. Fails
/// (after printing) when a pod's status is unreadable or a pod does not serve the wanted digest.
pub fn print_status(
    app: &AppName,
    target: &str,
    desired: &Release,
    pods: &[serde_json::Value],
    json: bool,
) -> Result<()> {
    if json {
        let st = HotStatus {
            app: app.to_string(),
            target,
            desired,
            pods,
        };
        println!("{}", serde_json::to_string_pretty(&st)?);
        return out_of_sync(app, desired, pods);
    }
    let d = desired
        .digest
        .map(|d| d.to_string())
        .unwrap_or_else(|| "(none)".into());
    println!("app {app}: wants {d} generation {}", desired.generation);
    if pods.is_empty() {
        println!("  no pod running");
    }
    for p in pods {
        if let Some(e) = p["error"].as_str() {
            println!(
                "  {}: status unavailable: {e}",
                p["pod"].as_str().unwrap_or("?")
            );
            continue;
        }
        let live = p["digest"].as_str().unwrap_or("(none)");
        let in_sync = if live == d { "in sync" } else { "NOT in sync" };
        println!(
            "  {}: live {} generation {} fetched {} ({in_sync}){}",
            p["pod"].as_str().unwrap_or("?"),
            live,
            p["generation"],
            p["fetched_at"].as_str().unwrap_or("never"),
            p["last_error"]
                .as_str()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
    }
    out_of_sync(app, desired, pods)
}

/// Ok only when there is a pod and every pod serves the wanted digest; else names each pod
/// that does not, and why.
fn out_of_sync(app: &AppName, desired: &Release, pods: &[serde_json::Value]) -> Result<()> {
    let Some(want) = desired.digest else {
        anyhow::bail!("{app} has no wanted release: run `cargo xtask deploy-sample {app}`");
    };
    if pods.is_empty() {
        anyhow::bail!(
            "no pod of {app} is running, so nothing serves {}",
            want.short()
        );
    }
    let bad: Vec<String> = pods
        .iter()
        .filter_map(|p| {
            let pod = p["pod"].as_str().unwrap_or("?");
            if let Some(e) = p["error"].as_str() {
                return Some(format!("{pod}: status unreadable: {e}"));
            }
            (p["digest"].as_str() != Some(&want.to_string())).then(|| {
                format!(
                    "{pod} serves {} instead{}",
                    p["digest"]
                        .as_str()
                        .map(|d| &d[..12.min(d.len())])
                        .unwrap_or("nothing"),
                    p["last_error"]
                        .as_str()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                )
            })
        })
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} of {} pod(s) of {app} do not serve {}: {}",
        bad.len(),
        pods.len(),
        want.short(),
        bad.join("; ")
    )
}

pub fn logs(
    sh: &Shell,
    global: &Global,
    target: &TargetArgs,
    app: &AppName,
    fetcher: bool,
    follow: bool,
) -> Result<()> {
    let t = target.resolve(sh);
    if t != Target::Local {
        return Cluster::new(sh, global, target, t).logs(app, fetcher, follow);
    }
    let p = Local::new(global).log_path(app, fetcher);
    if follow {
        cmd!(sh, "tail -n 200 -F {p}").run()?;
        return Ok(());
    }
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("reading {}: has `deploy-sample {app}` run?", p.display()))?;
    print!("{text}");
    Ok(())
}

pub fn down(sh: &Shell, global: &Global, target: &TargetArgs, app: &AppName) -> Result<()> {
    let t = target.resolve(sh);
    if t != Target::Local {
        Cluster::new(sh, global, target, t).down(app)?;
        eprintln!("deleted the Deployment, Service and release ConfigMap of {app}");
        return Ok(());
    }
    if Local::new(global).down(app)? {
        eprintln!("stopped the local pod of {app}");
    } else {
        eprintln!("no local pod of {app} was running");
    }
    Ok(())
}
