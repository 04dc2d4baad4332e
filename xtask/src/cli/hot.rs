//! `hot-patch`, `rollback`, `hot-status`, `logs`, `down`: change or inspect what a running app
//! serves, without restarting its pod. Written once against the `Target` trait.

use std::io::Write;
use std::time::Duration;

use aether_artifact::{AppName, Digest};
use anyhow::{bail, Result};

use super::Ctx;
use crate::ops::fleet::Fleet;
use crate::ops::reload::{self, CutoverArgs, Outcome};
use crate::release::Release;
use crate::targets::PodStatus;

/// Make a running app switch to an uploaded digest, without restarting its pod.
#[derive(clap::Args)]
pub struct HotPatch {
    app: AppName,
    #[arg(value_parser = crate::parse_digest)]
    digest: Digest,
    /// Wait (up to this many seconds) until every pod serves the new version, and print where
    /// the time went.
    #[arg(long)]
    wait: Option<u64>,
    /// Print one JSON object (schema: docs/reference.md) instead of key=value lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cutover: CutoverArgs,
}

impl HotPatch {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let t = ctx.target();
        let wait = self.wait.map(Duration::from_secs);
        let o = reload::patch(&*t, &self.app, self.digest, wait, &self.cutover)?;
        report(&self.app, o, self.wait.is_some(), self.json)
    }
}

/// Go back to the previous digest (or --to one), as a new generation.
#[derive(clap::Args)]
pub struct Rollback {
    app: AppName,
    /// The digest to go back to; `--to` alone lists the recent releases with their provenance.
    #[arg(long, num_args = 0..=1, value_parser = crate::parse_digest)]
    to: Option<Option<Digest>>,
    /// Wait (up to this many seconds) until every pod serves it, and print where the time went.
    #[arg(long)]
    wait: Option<u64>,
    /// Print one JSON object (schema: docs/reference.md) instead of key=value lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cutover: CutoverArgs,
}

impl Rollback {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let t = ctx.target();
        let store = t.store()?;
        if let Some(None) = self.to {
            let cur = t.release(&self.app)?.unwrap_or_default();
            let (recent, source) =
                crate::ops::registry::recent(t.control()?.as_ref(), &store, &self.app, &cur)?;
            if self.json {
                println!(
                    "{}",
                    serde_json::to_string(
                        &serde_json::json!({"app": self.app.as_str(), "source": source, "releases": recent})
                    )?
                );
                return Ok(());
            }
            if recent.is_empty() {
                bail!("{} has no release yet", self.app);
            }
            for r in &recent {
                println!("{}", r.line());
            }
            eprintln!(
                "roll back with `cargo xtask rollback {} --to <digest>`",
                self.app
            );
            return Ok(());
        }
        let wait = self.wait.map(Duration::from_secs);
        let o = reload::rollback(&*t, &self.app, self.to.flatten(), wait, &self.cutover)?;
        report(&self.app, o, self.wait.is_some(), self.json)
    }
}

/// Says whom a publish reached and, when it waited, where the time went; prints `generation=`
/// and `digest=`.
fn report(app: &AppName, o: Option<Outcome>, wait: bool, json: bool) -> Result<()> {
    let Some(Outcome {
        published: p,
        barrier,
        trace,
    }) = o
    else {
        if json {
            println!(
                "{}",
                serde_json::json!({"app": app.as_str(), "changed": false})
            );
        }
        return Ok(());
    };
    let digest = p.release.digest.expect("a release names a digest");
    if p.signalled.is_empty() {
        eprintln!(
            "release {app}: {} generation {}; no live pod to signal (`cargo xtask deploy-sample {app}` starts one; new pods start from the release)",
            digest.short(),
            p.release.generation
        );
    } else {
        eprintln!(
            "signalled {} pod(s) of {app}{}: {}",
            p.signalled.len(),
            if barrier { " to activate together" } else { "" },
            p.signalled.join(", ")
        );
        if let Some(tr) = &trace {
            eprintln!("{app} is serving {} everywhere", digest.short());
            eprintln!("{}", tr.line());
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "app": app.as_str(),
                "changed": true,
                "digest": digest,
                "generation": p.release.generation,
                "signalled": p.signalled,
                "barrier": barrier,
                "waited": wait && !p.signalled.is_empty(),
                "trace": trace,
            })
        );
        return Ok(());
    }
    println!("generation={}", p.release.generation);
    println!("digest={digest}");
    Ok(())
}

/// The wanted release and what each pod's fetcher reports; exit 1 unless every pod serves it.
#[derive(clap::Args)]
pub struct HotStatus {
    app: AppName,
    #[arg(long)]
    json: bool,
}

impl HotStatus {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let t = ctx.target();
        let desired = t.release(&self.app)?.unwrap_or_default();
        let pods = t.statuses(&self.app)?;
        let provenance = match desired.digest {
            Some(d) => crate::ops::signing::fetch(&t.store()?, &self.app, &d),
            None => None,
        };
        // The database the apps are given, as this machine reaches it (doctor's check).
        let database = ctx.global.database_url()?.map(|u| {
            crate::ops::platform::doctor::database_reachable(&u)
                .unwrap_or_else(|e| format!("unreachable: {e}"))
        });
        let control = crate::ops::registry::view(&*t, &self.app, desired.digest);
        print_status(
            &self.app,
            t.name(),
            &desired,
            provenance.as_ref(),
            &pods,
            Extra {
                database: database.as_deref(),
                control: control.as_ref(),
            },
            self.json,
        )
    }
}

#[derive(serde::Serialize)]
struct StatusJson<'a> {
    app: String,
    target: &'a str,
    desired: &'a Release,
    /// The wanted release's provenance record, when it has one.
    provenance: Option<&'a aether_artifact::provenance::Provenance>,
    pods: &'a [PodStatus],
    fleet: Fleet,
    /// The configured database as this machine reaches it (`None`: none configured).
    database: Option<&'a str>,
    /// The control plane and what it holds of this app (`None`: the target has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    control: Option<&'a crate::ops::registry::ControlView>,
}

/// What `hot-status` reports beside the pods.
struct Extra<'a> {
    database: Option<&'a str>,
    control: Option<&'a crate::ops::registry::ControlView>,
}

/// Prints the wanted release and, per pod, what its fetcher reports. Fails (after printing)
/// when a pod's status is unreadable or a pod does not serve the wanted digest.
fn print_status(
    app: &AppName,
    target: &str,
    desired: &Release,
    provenance: Option<&aether_artifact::provenance::Provenance>,
    pods: &[PodStatus],
    extra: Extra,
    json: bool,
) -> Result<()> {
    let fleet = Fleet::of(desired, pods);
    if json {
        let st = StatusJson {
            app: app.to_string(),
            target,
            desired,
            provenance,
            pods,
            fleet,
            database: extra.database,
            control: extra.control,
        };
        println!("{}", serde_json::to_string_pretty(&st)?);
        return out_of_sync(app, desired, pods);
    }
    let d = desired
        .digest
        .map(|d| d.to_string())
        .unwrap_or_else(|| "(none)".into());
    println!("app {app}: wants {d} generation {}", desired.generation);
    if let Some(p) = provenance {
        println!("  built: {}", p.summary());
    }
    if let Some(db) = extra.database {
        println!("  database: {db}");
    }
    if let Some(c) = extra.control {
        println!("  {}", c.line());
    }
    if pods.is_empty() {
        println!("  no pod running");
    }
    for p in pods {
        let Some(s) = &p.status else {
            println!(
                "  {}: status unavailable: {}",
                p.pod,
                p.error.as_deref().unwrap_or("?")
            );
            continue;
        };
        let live = s
            .digest
            .map(|d| d.to_string())
            .unwrap_or_else(|| "(none)".into());
        let in_sync = if live == d { "in sync" } else { "NOT in sync" };
        println!(
            "  {}: live {}{} generation {} fetched {}{} ({in_sync}){}{}{}",
            p.pod,
            live,
            s.deps_digest
                .map(|d| format!(" + node_modules {}", d.short()))
                .unwrap_or_default(),
            s.generation
                .map(|g| g.to_string())
                .unwrap_or_else(|| "-".into()),
            s.fetched_at.as_deref().unwrap_or("never"),
            s.fetch
                .as_ref()
                .filter(|f| Some(f.digest) == s.digest)
                .map(|f| format!(
                    " in {} ms ({})",
                    f.download_ms + f.verify_extract_ms,
                    crate::ops::packing::human_bytes(f.bytes)
                ))
                .unwrap_or_default(),
            s.staged
                .map(|g| format!("; staged {} (not live)", g.short()))
                .unwrap_or_default(),
            s.failing_since
                .as_deref()
                .map(|t| format!("; retrying since {t}"))
                .unwrap_or_default(),
            s.last_error
                .as_deref()
                .map(|e| match s.last_error_cause {
                    Some(c) => format!("; last error ({c}): {e}"),
                    None => format!("; last error: {e}"),
                })
                .unwrap_or_default()
        );
        if let Some(r) = &s.runner {
            println!("    app: {}", runner_line(r));
        }
        match &s.verifies_key {
            Some(id) => println!("    signatures: required (key {id})"),
            None => println!("    signatures: NOT verified (deploy with AETHER_VERIFY_KEY)"),
        }
        if let Some(n) = &s.news {
            println!("    news: {n}");
        }
    }
    if !pods.is_empty() && desired.digest.is_some() {
        println!("{}", fleet.line());
    }
    out_of_sync(app, desired, pods)
}

/// `aether-run`'s view: which release the app process runs, and what went wrong lately.
fn runner_line(r: &aether_artifact::RunnerStatus) -> String {
    let mut line = match (r.pid, r.digest) {
        (Some(pid), Some(d)) => format!(
            "pid {pid} runs {} generation {} since {}",
            d.short(),
            r.generation.unwrap_or(0),
            r.serving_since.as_deref().unwrap_or("?")
        ),
        (Some(pid), None) => format!("pid {pid} runs"),
        (None, _) => format!("{:?}", r.state).to_lowercase(),
    };
    line.push_str(&format!("; {} switches, {} restarts", r.swaps, r.restarts));
    if let Some(e) = &r.last_exit {
        line.push_str(&format!("; last exit: {e}"));
    }
    if let Some(f) = &r.last_failure {
        line.push_str(&format!("; FAILED: {f}"));
    }
    if let Some(i) = &r.inspector {
        line.push_str(&format!(
            "; node's inspector on {i} (`cargo xtask debug --off` if no session holds it)"
        ));
    }
    line
}

/// Ok only when there is a pod and every pod serves the wanted digest; else names each pod
/// that does not, and why.
fn out_of_sync(app: &AppName, desired: &Release, pods: &[PodStatus]) -> Result<()> {
    let Some(want) = desired.digest else {
        bail!("{app} has no wanted release: run `cargo xtask deploy-sample {app}`");
    };
    if pods.is_empty() {
        bail!(
            "no pod of {app} is running, so nothing serves {}",
            want.short()
        );
    }
    let bad: Vec<String> = pods.iter().filter_map(|p| p.behind(&want)).collect();
    if bad.is_empty() {
        return Ok(());
    }
    bail!(
        "{} of {} pod(s) of {app} do not serve {}: {}",
        bad.len(),
        pods.len(),
        want.short(),
        bad.join("; ")
    )
}

/// Print the app's (or with --fetcher the fetcher's) log.
#[derive(clap::Args)]
pub struct Logs {
    app: AppName,
    #[arg(long)]
    fetcher: bool,
    /// Keep streaming every live pod's log, merged in time order and prefixed by pod,
    /// following pods that come and go.
    #[arg(short, long)]
    follow: bool,
    /// With --follow: start each line with its time (on a cluster the kubelet's).
    #[arg(long)]
    timestamps: bool,
}

impl Logs {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let t = ctx.target();
        if !self.follow {
            return t.logs(&self.app, self.fetcher);
        }
        let mut out = std::io::stdout().lock();
        t.follow_logs(&self.app, self.fetcher, &mut |l| {
            let line = match self.timestamps {
                true => writeln!(out, "{} [{}] {}", l.at, l.pod, l.text),
                false => writeln!(out, "[{}] {}", l.pod, l.text),
            };
            // A closed pipe (`| head`) ends the follow.
            line.and_then(|()| out.flush()).is_ok()
        })
    }
}

/// Stop the app (local: its processes, and the embedded store with the last app; cluster: its
/// Deployment, Service and release ConfigMap).
#[derive(clap::Args)]
pub struct Down {
    app: AppName,
}

impl Down {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        ctx.target().down(&self.app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_artifact::Status;

    /// hot-status's verdict: every pod must serve the wanted digest, and an unreadable pod is
    /// named with its error.
    #[test]
    fn out_of_sync_names_each_pod_and_why() {
        let app = AppName::parse("demo").unwrap();
        let d = |c: char| Digest::parse(&c.to_string().repeat(64)).unwrap();
        let want = Release::default().next(d('a')).unwrap();
        let ok = |pod: &str| PodStatus {
            pod: pod.into(),
            url: None,
            status: Some(Status {
                digest: Some(d('a')),
                ..Default::default()
            }),
            error: None,
        };
        assert!(out_of_sync(&app, &want, &[ok("p1"), ok("p2")]).is_ok());
        assert!(out_of_sync(&app, &want, &[])
            .unwrap_err()
            .to_string()
            .contains("no pod"));
        let behind = PodStatus {
            status: Some(Status {
                digest: Some(d('b')),
                last_error: Some("digest mismatch".into()),
                ..Default::default()
            }),
            ..ok("p2")
        };
        let gone = PodStatus::new("p3".into(), None, Err(anyhow::anyhow!("exec failed")));
        let e = out_of_sync(&app, &want, &[ok("p1"), behind, gone])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("2 of 3 pod(s)"), "{e}");
        assert!(
            e.contains("p2 serves bbbbbbbbbbbb instead (last error: digest mismatch)"),
            "{e}"
        );
        assert!(e.contains("p3: status unreadable: exec failed"), "{e}");
    }
}
