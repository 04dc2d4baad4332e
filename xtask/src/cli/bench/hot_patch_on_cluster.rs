//! Hot-patch to served on a real cluster, split by where the time goes (kubectl, the kubelet,
//! the fetch, the switch), and the cutover across replicas.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use super::*;

/// `bench --cluster`: hot-patch → new version served on the cluster `KUBECONFIG` names, timed
/// from the start of the `hot-patch` command as a user runs it, split by the fetcher's own
/// timestamps into kubectl calls, the kubelet's volume refresh, fetch + swap, aether-run's
/// switch, and the client seeing it.
pub(super) fn cluster(sh: &Shell, cycles: usize) -> Result<()> {
    let _relay = crate::k8s_local::ApiRelay::start()?;
    let work = tempfile::Builder::new().prefix("aether-bench-").tempdir()?;
    let project = work.path().join("project");
    let dir = project.join("app");
    crate::ops::sample::ensure(&dir)?;
    let ns = format!("aether-bench-{}", std::process::id());
    let exe = std::env::current_exe()?;
    let run_x = |args: &[&str]| -> Result<std::process::Output> {
        Ok(std::process::Command::new(&exe)
            .args(args)
            .env("AETHER_PROJECT_DIR", &project)
            .env("AETHER_NAMESPACE", &ns)
            .env(
                "AETHER_TARGET",
                std::env::var("AETHER_TARGET").unwrap_or_else(|_| "kube".into()),
            )
            .env_remove(aether_artifact::store::ENV_ENDPOINT)
            .output()?)
    };
    let x = |args: &[&str]| succeeded(args, run_x(args)?);
    let last = |out: &str, key: &str| -> Result<String> {
        out.lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(String::from)
            .with_context(|| format!("no {key}= in {out}"))
    };
    let result = (|| -> Result<Vec<[Duration; 6]>> {
        let d = x(&["deploy-sample", "demo", dir.to_str().unwrap()])?;
        let url = last(&d, "url")?;
        let mut out = Vec::new();
        let src = dir.join("server.js");
        let text = fs::read_to_string(&src)?;
        for i in 0..cycles {
            let version = format!("bench-{i}");
            fs::write(&src, text.replace("'v1'", &format!("'{version}'")))?;
            let digest = last(
                &x(&["hot-upload", "demo", dir.to_str().unwrap()])?,
                "digest",
            )?;
            let t0_ms = now_ms();
            let t0 = Instant::now();
            x(&["hot-patch", "demo", &digest])?;
            let cmd = t0.elapsed();
            loop {
                let body = attohttpc::get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .ok()
                    .and_then(|r| r.text().ok());
                if body.is_some_and(|b| b.contains(&version)) {
                    break;
                }
                anyhow::ensure!(
                    t0.elapsed() < Duration::from_secs(30),
                    "cycle {i}: not served within 30 s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let total = t0.elapsed();
            let jsonpath = "jsonpath={.items[0].metadata.name}";
            let fetcher = aether_artifact::FetcherEnv::BIN_IN_IMAGE;
            let pods = cmd!(
                sh,
                "kubectl -n {ns} get pods -l aether.dev/app=demo -o {jsonpath}"
            )
            .quiet()
            .read()?;
            // The fetcher's status, typed: the contract both sides share.
            let st: aether_artifact::Status = serde_json::from_str(
                &cmd!(
                    sh,
                    "kubectl -n {ns} exec {pods} -c aether-fetcher -- {fetcher} status"
                )
                .quiet()
                .read()?,
            )?;
            let (seen, published) = (
                st.seen_at_ms.unwrap_or(t0_ms),
                st.published_at_ms.unwrap_or(t0_ms),
            );
            let switched = st
                .runner
                .as_ref()
                .and_then(|r| r.switched_at_ms)
                .unwrap_or(published);
            let span = |a: u64, b: u64| Duration::from_millis(b.saturating_sub(a));
            let cmd_end = t0_ms + cmd.as_millis() as u64;
            out.push([
                total,
                cmd,
                span(cmd_end, seen),
                span(seen, published),
                span(published, switched),
                total.saturating_sub(span(t0_ms, switched)),
            ]);
        }
        Ok(out)
    })();
    let dev = result
        .is_ok()
        .then(|| dev_on_cluster(sh, &project, &dir, &ns, cycles));
    let cut = result
        .is_ok()
        .then(|| cutover::measure(&run_x, &dir, &project, &ns, cycles));
    let see = result.is_ok().then(|| {
        let global = crate::config::Global {
            project_dir: Some(project.clone()),
            ..Default::default()
        };
        let open = crate::ops::ui::Opener::new(crate::targets::Kind::Kube, &ns, global);
        let t = open.open(sh);
        let app = aether_artifact::AppName::parse("demo")?;
        // Printed at once: the lines below belong to the other parts.
        see::measure(sh, &*t, open.clone(), &app, &dir, cycles)
    });
    let _ = x(&["down", "demo"]);
    let _ = cmd!(sh, "kubectl delete namespace {ns} --wait=false")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run();
    if let Ok(b) = fs::read(project.join(".aether/local/store.json")) {
        let st: serde_json::Value = serde_json::from_slice(&b)?;
        if let Some(pid) = st["pid"].as_u64() {
            let _ = crate::proc::kill_group(pid as u32);
        }
    }
    let mut cs = result?;
    let kubectl_floor = min_time(5, || {
        Ok(cmd!(sh, "kubectl -n {ns} get configmaps -o name")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()?)
    })?;
    let run_dir = tempfile::tempdir()?;
    let api_floor = crate::targets::cluster::kube::Kube::new(
        sh,
        crate::targets::cluster::kube::Flavor::Kube { context: None },
        "default",
    )
    .with_run_dir(run_dir.path().to_path_buf())
    .api_floor(5)?;
    cs.sort_by_key(|c| c[0]);
    let totals: Vec<Duration> = cs.iter().map(|c| c[0]).collect();
    let all: f64 = cs.iter().map(|c| c[0].as_secs_f64()).sum();
    let share = |i: usize| 100.0 * cs.iter().map(|c| c[i].as_secs_f64()).sum::<f64>() / all;
    println!(
        "hot-patch → new version served, real cluster, {} cycles",
        cs.len()
    );
    println!(
        "  {} from the start of `hot-patch` (target p50 ≤ 300 ms)",
        p50_p95(&totals)
    );
    println!(
        "  share: hot-patch command {:.0}%, news reaching the fetcher (API watch, else the kubelet's volume refresh) {:.0}%, fetch+verify+swap {:.0}%, aether-run start beside+switch {:.0}%, first response seen {:.0}%",
        share(1),
        share(2),
        share(3),
        share(4),
        share(5)
    );
    println!(
        "  floor in the same run: one `kubectl get` {:.0} ms; one API GET through kubectl proxy {:.1} ms",
        secs(kubectl_floor) * 1000.0,
        secs(api_floor) * 1000.0
    );
    if let Some(dev) = dev {
        let mut totals = dev?;
        totals.sort();
        println!(
            "dev on the cluster: save → served (pack, upload, publish, every pod answering), {} cycles",
            totals.len()
        );
        println!("  {} (target p50 ≤ 400 ms)", p50_p95(&totals));
    }
    if let Some(cut) = cut {
        cut?.print();
    }
    if let Some(see) = see {
        see?;
    }
    Ok(())
}

/// The cycle `dev` runs per save, on the cluster, in one process (one API proxy for all of
/// them, as a `dev` session has): save → every pod serving the new version.
pub(super) fn dev_on_cluster(
    sh: &Shell,
    project: &std::path::Path,
    dir: &std::path::Path,
    ns: &str,
    cycles: usize,
) -> Result<Vec<Duration>> {
    let global = crate::config::Global {
        project_dir: Some(project.to_path_buf()),
        ..Default::default()
    };
    let args = crate::targets::TargetArgs {
        target: Some(crate::targets::Kind::Kube),
        context: None,
        namespace: ns.into(),
    };
    // Back to the line the edits replace, plus a line of its own so no release of the first
    // part is uploaded again (that would skip the upload).
    let src = dir.join("server.js");
    let text: String = std::fs::read_to_string(&src)?
        .lines()
        .map(|l| match l.starts_with("const VERSION = ") {
            true => "const VERSION = 'v1';\n".to_string(),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(
        &src,
        format!("{text}// dev cycles of bench {}\n", std::process::id()),
    )?;
    let t = args.open_kind(sh, &global, crate::targets::Kind::Kube);
    let store = t.store()?;
    let app = aether_artifact::AppName::parse("demo")?;
    let cs = super::edit::edit_cycles(&*t, &store, &global, &app, dir, cycles)?;
    Ok(cs.iter().map(|c| c.total).collect())
}
