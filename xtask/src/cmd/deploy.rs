//! `cargo xtask deploy-sample <app> [path]`: generate the sample when no path is given,
//! package, upload, make it the wanted release, start the app, wait until it serves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aether_artifact::AppName;
use anyhow::Result;

use super::upload::upload;
use super::Ctx;
use crate::config::Global;
use crate::release::Release;
use crate::target::{DeployOpts, Running, Target};

/// Deploy an app (the generated sample when no path is given) and wait until it serves.
#[derive(clap::Args)]
pub struct DeploySample {
    app: AppName,
    path: Option<PathBuf>,
    /// How long to wait for the app to run and answer, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// kube target: the command that loads the fetcher image into the cluster's nodes, with
    /// `{archive}` for the OCI archive, e.g. 'kind load image-archive {archive}'. Run only when
    /// a node lacks the image.
    #[arg(long, env = "AETHER_IMAGE_IMPORT")]
    image_import: Option<String>,
    /// Cluster targets: how many pods run the app [default: 1, or what the Deployment has].
    /// With more than one, hot-patch, rollback and dev switch them together (a cutover).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    replicas: Option<u32>,
}

impl DeploySample {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let dir = match &self.path {
            Some(p) => p.clone(),
            None => sample_dir(&ctx.global)?,
        };
        aether_artifact::pack::check_root(&dir)?;
        let t = ctx.target();
        let opts = DeployOpts {
            image_import: self.image_import.clone(),
            replicas: self.replicas,
            ..Default::default()
        };
        deploy(
            &*t,
            &ctx.global,
            &self.app,
            &dir,
            Duration::from_secs(self.timeout),
            &opts,
        )?;
        Ok(())
    }
}

/// `examples/sample-node`, generated when missing.
pub fn sample_dir(global: &Global) -> Result<PathBuf> {
    let d = global.project_dir().join("examples/sample-node");
    if crate::sample::ensure(&d)? {
        eprintln!("generated the sample app in {}", d.display());
    }
    Ok(d)
}

/// Upload `dir`, make it the wanted release (an existing app through [`Target::publish`]),
/// create what is missing, wait until every pod serves it; prints `url=` and `digest=`.
pub fn deploy(
    t: &dyn Target,
    global: &Global,
    app: &AppName,
    dir: &Path,
    timeout: Duration,
    opts: &DeployOpts,
) -> Result<Running> {
    let up = upload(&t.store()?, global, app, dir, 3600, true)?;
    if let Some(line) = up.deps_line() {
        eprintln!("{line}");
    }
    eprintln!("{}", up.summary());
    let first = Release::default()
        .next(up.digest)
        .expect("an empty release differs from any digest");
    if t.release(app)?.is_some() {
        match t.publish(app, &mut |cur| Ok(cur.next(up.digest)))? {
            Some(p) => eprintln!(
                "release {app}: {} generation {} (signalled {} running pod(s))",
                up.digest.short(),
                p.release.generation,
                p.signalled.len()
            ),
            None => eprintln!(
                "release {app}: {} is already the wanted version",
                up.digest.short()
            ),
        }
    } else {
        eprintln!("release {app}: {} generation 1", up.digest.short());
    }
    let opts = DeployOpts {
        runtime: crate::target::Runtime {
            node_major: up.node_major,
            glibc: up.deps.as_ref().is_some_and(|d| d.deps.native),
        },
        ..opts.clone()
    };
    if opts.runtime.glibc {
        eprintln!(
            "{app}'s dependencies hold native addons (*.node): it runs on {} (glibc), not Alpine",
            opts.runtime.node_image()
        );
    }
    let running = t.ensure_running(app, &first, &opts)?;
    t.wait_served(app, &up.digest, timeout)?;
    eprintln!("{app} is serving {}", up.digest.short());
    if let Some(url) = &running.url {
        println!("url={url}");
    }
    println!("digest={}", up.digest);
    Ok(running)
}
