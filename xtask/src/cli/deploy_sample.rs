//! `cargo xtask deploy-sample <app> [path]`: generate the sample when no path is given,
//! package, upload, make it the wanted release, start the app, wait until it serves.

use std::path::PathBuf;
use std::time::Duration;

use aether_artifact::AppName;
use anyhow::Result;

use super::Ctx;
use crate::ops::deploy::{deploy, sample_dir};
use crate::targets::DeployOpts;

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
    /// Deploy without AETHER_VERIFY_KEY although the running pods verify signatures, turning
    /// verification off on them (refused without this flag).
    #[arg(long)]
    allow_unsigned: bool,
    /// Give the pods the uploader's store key when the store has no read-only key for them
    /// (AETHER_S3_READ_ACCESS_KEY): anyone who reads their Secret can then overwrite every
    /// app's artifacts (refused without this flag).
    #[arg(long, env = "AETHER_ALLOW_WRITER_CREDENTIALS")]
    allow_writer_credentials: bool,
}

impl DeploySample {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let dir = match &self.path {
            Some(p) => p.clone(),
            None => sample_dir(&ctx.global)?,
        };
        crate::ops::upload::check_app(&dir)?;
        let t = ctx.target();
        let opts = DeployOpts {
            image_import: self.image_import.clone(),
            replicas: self.replicas,
            allow_unsigned: self.allow_unsigned,
            allow_writer_credentials: self.allow_writer_credentials,
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
