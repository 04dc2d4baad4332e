//! Commands only a cluster has: `render` and `k8s-start`.

use aether_artifact::{AppName, Digest};
use anyhow::{bail, Result};

use super::Ctx;
use crate::targets::Kind;

/// Print the Kubernetes manifests of an app (credentials as placeholders), for review or GitOps.
#[derive(clap::Args)]
pub struct Render {
    #[arg(required_unless_present = "developer_role")]
    app: Option<AppName>,
    #[arg(long, value_parser = crate::parse_digest, required_unless_present = "developer_role")]
    digest: Option<Digest>,
    /// Instead: the Role (and bindings) a developer needs in the namespace to run the loop,
    /// for this user name.
    #[arg(long, value_name = "USER", conflicts_with_all = ["app", "platform"])]
    developer_role: Option<String>,
    /// Also print the store and Postgres objects `bootstrap` applies.
    #[arg(long)]
    platform: bool,
    /// The store of `--platform`.
    #[arg(long, value_enum, default_value_t, requires = "platform")]
    store: crate::ops::platform::StoreKind,
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
        if let Some(user) = &self.developer_role {
            let v = serde_json::json!({"ns": ctx.target.namespace, "user": user});
            print!("{}", crate::manifests::render("developer-rbac", &v)?);
            return Ok(());
        }
        let (Some(app), Some(digest)) = (&self.app, self.digest) else {
            bail!("render needs an app and --digest");
        };
        let c = ctx.target.open_cluster(ctx.sh, &ctx.global, kind);
        let mut yaml = c.render(app, digest)?;
        if self.platform {
            yaml.push_str(&crate::ops::platform::render(
                &ctx.target.namespace,
                self.store,
            )?);
        }
        if self.json {
            println!(
                "{}",
                serde_json::json!({"app": app.as_str(), "objects": objects(&yaml), "yaml": yaml})
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
