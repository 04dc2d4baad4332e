//! Commands only a cluster has: `render` and `k8s-start`.

use aether_artifact::{AppName, Digest};
use anyhow::{bail, Result};

use super::Ctx;
use crate::targets::Kind;

/// Print the Kubernetes manifests of an app (credentials as placeholders), for review or GitOps.
#[derive(clap::Args)]
pub struct Render {
    app: AppName,
    #[arg(long, value_parser = crate::parse_digest)]
    digest: Digest,
    /// Also print the MinIO and Postgres objects `bootstrap` applies.
    #[arg(long)]
    platform: bool,
    /// Print one JSON object: the YAML and the list of objects in it.
    #[arg(long)]
    json: bool,
}

impl Render {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let kind = match ctx.target.target {
            Some(Kind::Kube) => Kind::Kube,
            _ => Kind::Microk8s,
        };
        let c = ctx.target.open_cluster(ctx.sh, &ctx.global, kind);
        let mut yaml = c.render(&self.app, self.digest)?;
        if self.platform {
            yaml.push_str(&crate::ops::platform::render(&ctx.target.namespace)?);
        }
        if self.json {
            println!(
                "{}",
                serde_json::json!({"app": self.app.as_str(), "objects": objects(&yaml), "yaml": yaml})
            );
        } else {
            print!("{yaml}");
        }
        Ok(())
    }
}

/// `kind/name` of each document, read from its top-level `kind:` and `metadata.name` lines
/// (the templates write them in that shape; the tests parse the YAML properly).
fn objects(yaml: &str) -> Vec<String> {
    yaml.split("\n---")
        .filter_map(|doc| {
            let kind = doc.lines().find_map(|l| l.strip_prefix("kind: "))?;
            let mut in_meta = false;
            let name = doc.lines().find_map(|l| {
                if l == "metadata:" {
                    in_meta = true;
                } else if in_meta && !l.starts_with(' ') {
                    in_meta = false;
                }
                l.strip_prefix("  name: ").filter(|_| in_meta)
            })?;
            Some(format!("{}/{}", kind.trim(), name.trim().trim_matches('"')))
        })
        .collect()
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
        ctx.target.open_cluster(ctx.sh, &ctx.global, kind).start()
    }
}
