//! `cargo xtask deploy-sample <app> [path]`: generate the sample when no path is given,
//! package, upload, make it the wanted release, start the app, wait until it serves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aether_artifact::AppName;
use anyhow::Result;
use xshell::Shell;

use crate::cluster::Cluster;
use crate::config::Global;
use crate::local::Local;
use crate::target::{Target, TargetArgs};

pub fn run(
    sh: &Shell,
    global: &Global,
    target: &TargetArgs,
    app: &AppName,
    path: Option<&Path>,
    timeout: Duration,
    image_import: Option<&str>,
) -> Result<()> {
    let t = target.resolve(sh);
    let dir: PathBuf = match path {
        Some(p) => p.to_path_buf(),
        None => {
            let d = global.project_dir().join("examples/sample-node");
            if crate::sample::ensure(&d)? {
                eprintln!("generated the sample app in {}", d.display());
            }
            d
        }
    };
    if t != Target::Local {
        return Cluster::new(sh, global, target, t).deploy(app, &dir, timeout, image_import);
    }
    let local = Local::new(global);
    let store = local.store()?;
    let up = crate::upload::upload(&store, global, app, &dir, 3600, true)?;
    eprintln!("{}", up.summary());
    let current = local.release(app)?;
    let before = local.app_pids(app);
    match current.next(up.digest) {
        Some(next) => {
            local.set_release(app, &next)?;
            eprintln!(
                "release {app}: {} generation {}",
                up.digest.short(),
                next.generation
            );
        }
        None => {
            eprintln!(
                "release {app}: {} is already the wanted version (generation {})",
                up.digest.short(),
                current.generation
            );
        }
    }
    // Nothing changed for a pod that already runs this digest: do not wait for a restart.
    let before = if current.digest == Some(up.digest) {
        Vec::new()
    } else {
        before
    };
    let (pod, started) = local.ensure_pod(sh, app, timeout)?;
    if !started {
        eprintln!(
            "the local pod of {app} is already running (fetcher pid {})",
            pod.fetcher_pid
        );
    }
    let body = local.wait_served(app, &up.digest, &before, timeout)?;
    eprintln!(
        "{app} is serving {}:\n{}",
        up.digest.short(),
        body.trim_end()
    );
    println!("url=http://127.0.0.1:{}/", pod.app_port);
    println!("digest={}", up.digest);
    Ok(())
}
