//! The platform on a real cluster: `bootstrap` from nothing and again (a no-op), and `dev`'s
//! save → served through bootstrap's in-cluster store, beside the same cycle through the
//! embedded store that `bench --cluster` measures first in the same run.

use std::time::{Duration, Instant};

use anyhow::Result;
use xshell::{cmd, Shell};

use super::*;

pub(super) fn platform(sh: &Shell, cycles: usize) -> Result<()> {
    let _relay = crate::k8s_local::ApiRelay::start()?;
    let work = tempfile::Builder::new().prefix("aether-bench-").tempdir()?;
    let project = work.path().join("project");
    let dir = project.join("app");
    crate::ops::sample::ensure(&dir)?;
    let ns = format!("aether-bench-platform-{}", std::process::id());
    let postgres = postgres_image(sh)?;
    let exe = std::env::current_exe()?;
    let x = |args: &[&str]| {
        let mut c = std::process::Command::new(&exe);
        c.args(args)
            .env("AETHER_PROJECT_DIR", &project)
            .env("AETHER_NAMESPACE", &ns)
            .env("AETHER_TARGET", "kube")
            .env_remove(aether_artifact::store::ENV_ENDPOINT);
        if let Some(p) = &postgres {
            c.env("AETHER_POSTGRES_IMAGE", p);
        }
        succeeded(args, c.output()?)
    };
    let result = (|| -> Result<(Duration, Duration, Vec<Duration>)> {
        let t = Instant::now();
        x(&["bootstrap"])?;
        let cold = t.elapsed();
        let t = Instant::now();
        x(&["bootstrap"])?;
        let again = t.elapsed();
        x(&["deploy-sample", "demo", dir.to_str().unwrap()])?;
        let mut dev = super::hot_patch_on_cluster::dev_on_cluster(sh, &project, &dir, &ns, cycles)?;
        dev.sort();
        Ok((cold, again, dev))
    })();
    let _ = x(&["down", "demo"]);
    let _ = x(&["uninstall", "--delete-data"]);
    let _ = cmd!(
        sh,
        "kubectl delete namespace {ns} --wait=false --ignore-not-found"
    )
    .quiet()
    .ignore_stdout()
    .ignore_stderr()
    .run();
    let (cold, again, dev) = result?;
    println!("the platform on the cluster (bootstrap's store and Postgres in namespace {ns})");
    println!(
        "  bootstrap from nothing {:.1} s (store, Postgres and the control plane ready, images already built); again {:.2} s (plan: nothing to do)",
        secs(cold),
        secs(again)
    );
    println!(
        "  dev through the in-cluster store and control plane (pods with no store key): {} (the embedded store's figure is the \"dev on the cluster\" line above)",
        p50_p95(&dev)
    );
    Ok(())
}

/// Where the upstream Postgres cannot be pulled and images are imported (k8s-local), the one
/// built from this machine's package, loaded into the nodes.
fn postgres_image(sh: &Shell) -> Result<Option<String>> {
    if std::env::var_os("AETHER_POSTGRES_IMAGE").is_some() {
        return Ok(None);
    }
    let Ok(template) = std::env::var("AETHER_IMAGE_IMPORT") else {
        return Ok(None);
    };
    let info = crate::images::postgres::run(sh, None)?;
    let argv = crate::targets::cluster::import_command(&template, &info.archive)?;
    let (prog, args) = argv.split_first().expect("a program");
    cmd!(sh, "{prog} {args...}").quiet().ignore_stdout().run()?;
    Ok(Some(info.reference))
}
