//! Commands only a cluster has: `render` and `k8s-start`.

use aether_artifact::{AppName, Digest};
use anyhow::{bail, Result};

use super::Ctx;
use crate::target::cluster::Cluster;
use crate::target::Kind;

/// Print the Kubernetes manifests of an app (credentials as placeholders), for review or GitOps.
#[derive(clap::Args)]
pub struct Render {
    app: AppName,
    #[arg(long, value_parser = crate::parse_digest)]
    digest: Digest,
    /// Also print the MinIO and Postgres objects `bootstrap` applies.
    #[arg(long)]
    platform: bool,
}

impl Render {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let kind = match ctx.target.target {
            Some(Kind::Kube) => Kind::Kube,
            _ => Kind::Microk8s,
        };
        let c = Cluster::new(ctx.sh, &ctx.global, &ctx.target, kind);
        print!("{}", c.render(&self.app, self.digest)?);
        if self.platform {
            print!("{}", super::platform::render(&ctx.target.namespace)?);
        }
        Ok(())
    }
}

/// Ensure MicroK8s is running and ready, addons dns and hostpath-storage are on, and the
/// namespace exists. Changes nothing when all is in place.
#[derive(clap::Args)]
pub struct K8sStart {}

impl K8sStart {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let kind = match ctx.target.target {
            Some(Kind::Kube) => Kind::Kube,
            Some(Kind::Local) => bail!("k8s-start is for the microk8s and kube targets"),
            _ => Kind::Microk8s,
        };
        Cluster::new(ctx.sh, &ctx.global, &ctx.target, kind).start()
    }
}
