//! `doctor`: every prerequisite and service checked, with what is missing and the command
//! that fixes it. Changes nothing.

use std::time::Duration;

use aether_artifact::store::{PartialStore, Secret, Store};
use anyhow::{bail, Result};
use xshell::Shell;

use crate::config::Global;
use crate::manifests::{self};
use crate::targets::cluster::kube::{self, Flavor};
use crate::targets::{Kind, TargetArgs};

use super::*;

pub use super::check::{Check, Verdict};

pub fn doctor(sh: &Shell, global: &Global, targs: &TargetArgs, json: bool) -> Result<()> {
    let t = targs.resolve(sh);
    let cluster = t != Kind::Local;
    let mut checks = Vec::new();
    let mut tool = |name: &'static str, program: &str, args: &[&str], required: bool, fix: &str| {
        let c = match version_of(sh, program, args) {
            Some(v) => Check {
                name,
                status: Verdict::Ok,
                detail: v,
                fix: None,
                required,
            },
            None => Check {
                name,
                status: Verdict::Missing,
                detail: "not found on PATH".into(),
                fix: Some(fix.into()),
                required,
            },
        };
        checks.push(c);
    };
    tool(
        "cargo",
        "cargo",
        &["--version"],
        true,
        "install Rust with rustup: https://rustup.rs",
    );
    tool(
        "rustup",
        "rustup",
        &["--version"],
        false,
        "install rustup to manage toolchains (optional)",
    );
    tool("kubectl", "kubectl", &["version", "--client"], t == Kind::Kube, "install kubectl (e.g. `sudo snap install kubectl --classic`); MicroK8s users can use `microk8s kubectl`");
    tool(
        "docker",
        "docker",
        &["--version"],
        false,
        "optional: not needed (sidecar-image writes OCI archives itself)",
    );

    // node: the local target runs the app with it.
    checks.push(match version_of(sh, "node", &["--version"]) {
        Some(v) => {
            let major = crate::targets::local::node_major(&v);
            if major >= 18 {
                Check {
                    name: "node",
                    status: Verdict::Ok,
                    detail: v,
                    fix: None,
                    required: !cluster,
                }
            } else {
                Check {
                    name: "node",
                    status: Verdict::Broken,
                    detail: format!("{v} is older than 18"),
                    fix: Some("install Node.js 20 (e.g. `sudo apt-get install nodejs`)".into()),
                    required: !cluster,
                }
            }
        }
        None => Check {
            name: "node",
            status: Verdict::Missing,
            detail: "not found on PATH".into(),
            fix: Some("install Node.js 20 (e.g. `sudo apt-get install nodejs`)".into()),
            required: !cluster,
        },
    });

    let mk_required = t == Kind::Microk8s;
    checks.push(match crate::targets::cluster::kube::host::microk8s_version(sh) {
        None => Check {
            name: "microk8s",
            status: Verdict::Missing,
            detail: "not installed".into(),
            fix: Some(format!("sudo snap install microk8s --classic --channel={MICROK8S_CHANNEL} (or `cargo xtask bootstrap`)")),
            required: mk_required,
        },
        Some(v) => match parse_microk8s_version(&v) {
            Some(mm) if mm >= MIN_MICROK8S => Check { name: "microk8s", status: Verdict::Ok, detail: v, fix: None, required: mk_required },
            _ => Check {
                name: "microk8s",
                status: Verdict::Broken,
                detail: format!("{v}: native sidecars need 1.29 or newer"),
                fix: Some(format!("sudo snap refresh microk8s --channel={MICROK8S_CHANNEL}")),
                required: mk_required,
            },
        },
    });

    checks.push(store_check(global, t)?);
    checks.push(database_check(global)?);
    checks.push(super::control_check::control_check(
        &*targs.open_kind(sh, global, t),
    ));
    if cluster {
        checks.extend(cluster_checks(sh, global, targs, t));
    } else {
        checks.push(Check {
            name: "cluster",
            status: Verdict::Skipped,
            detail: "local target: no cluster needed".into(),
            fix: None,
            required: false,
        });
    }

    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.required && matches!(c.status, Verdict::Missing | Verdict::Broken))
        .map(|c| c.name)
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let status = format!("{:?}", c.status).to_lowercase();
            let req = if c.required { "" } else { " (optional)" };
            println!("{status:<8} {:<10} {}{req}", c.name, c.detail);
            if let (Some(fix), false) = (&c.fix, c.status == Verdict::Ok) {
                println!("{:<8} {:<10} fix: {fix}", "", "");
            }
        }
    }
    if !failed.is_empty() {
        bail!("required pieces missing or broken: {}", failed.join(", "));
    }
    Ok(())
}

fn store_check(global: &Global, t: Kind) -> Result<Check> {
    let layers = global.store_layers()?;
    if t == Kind::Local && layers.endpoint.is_none() {
        return Ok(Check {
            name: "store",
            status: Verdict::Ok,
            detail: "embedded S3 store (started on demand by the local target)".into(),
            fix: None,
            required: false,
        });
    }
    let layers = layers.or(PartialStore {
        endpoint: Some(crate::targets::cluster::DEFAULT_HOST_ENDPOINT.into()),
        ..Default::default()
    });
    let cfg = match layers.finish() {
        Ok(c) => c,
        Err(e) => {
            return Ok(Check {
                name: "store",
                status: Verdict::Missing,
                detail: e,
                fix: Some("cargo xtask bootstrap".into()),
                required: t != Kind::Local,
            })
        }
    };
    let endpoint = cfg.endpoint.clone();
    let bucket = cfg.bucket.clone();
    let store = Store::with_timeout(cfg, Duration::from_secs(5))?;
    Ok(match store.bucket_exists() {
        Ok(true) => Check {
            name: "store",
            status: Verdict::Ok,
            detail: format!("{endpoint}, bucket {bucket} present, credentials valid"),
            fix: None,
            required: t != Kind::Local,
        },
        Ok(false) => Check {
            name: "store",
            status: Verdict::Broken,
            detail: format!("{endpoint}: credentials valid, bucket {bucket} missing"),
            fix: Some("`cargo xtask hot-upload` creates it (or `cargo xtask bootstrap`)".into()),
            required: t != Kind::Local,
        },
        Err(e) => Check {
            name: "store",
            status: if e.kind == aether_artifact::store::ErrorKind::Unreachable {
                Verdict::Missing
            } else {
                Verdict::Broken
            },
            detail: format!("{e}"),
            fix: Some("cargo xtask bootstrap".into()),
            required: t != Kind::Local,
        },
    })
}

/// The database as this machine reaches it: `AETHER_DATABASE_URL`, else the config file.
/// host:port of a postgres:// URL, without its credentials.
fn url_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let hostpart = rest.split('/').next()?;
    let hostpart = hostpart.rsplit_once('@').map_or(hostpart, |(_, h)| h);
    let (host, port) = match hostpart.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().ok()?),
        None => (hostpart.to_string(), 5432),
    };
    Some((host, port))
}

pub fn database_reachable(url: &Secret) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    let (host, port) = url_host_port(url.expose()).ok_or("the database URL does not parse")?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or("no address")?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    Ok(format!("{host}:{port} reachable"))
}

fn database_check(global: &Global) -> Result<Check> {
    Ok(match global.database_url()? {
        None => Check {
            name: "database",
            status: Verdict::Missing,
            detail: "no database configured".into(),
            fix: Some("cargo xtask bootstrap (or set AETHER_DATABASE_URL)".into()),
            required: false,
        },
        Some(url) => match database_reachable(&url) {
            Ok(d) => Check {
                name: "database",
                status: Verdict::Ok,
                detail: d,
                fix: None,
                required: false,
            },
            Err(e) => Check {
                name: "database",
                status: Verdict::Broken,
                detail: e,
                fix: Some("cargo xtask bootstrap (starts Postgres in the cluster)".into()),
                required: false,
            },
        },
    })
}

fn cluster_checks(sh: &Shell, global: &Global, targs: &TargetArgs, t: Kind) -> Vec<Check> {
    let c = targs.open_cluster(sh, global, t);
    let ns = c.kube.namespace.clone();
    let mut out = Vec::new();
    match c.kube.get::<serde_json::Value>("namespace", &ns) {
        Ok(Some(_)) => out.push(Check {
            name: "cluster",
            status: Verdict::Ok,
            detail: format!("reachable, namespace {ns} present"),
            fix: None,
            required: true,
        }),
        Ok(None) => out.push(Check {
            name: "cluster",
            status: Verdict::Broken,
            detail: format!("reachable, namespace {ns} missing"),
            fix: Some("cargo xtask k8s-start".into()),
            required: true,
        }),
        Err(e) => {
            let first = format!("{e:#}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            out.push(Check {
                name: "cluster",
                status: Verdict::Missing,
                detail: first,
                fix: Some("cargo xtask k8s-start (or check your kubeconfig context)".into()),
                required: true,
            });
            return out;
        }
    }
    out.push(match c.kube.nodes() {
        Ok(nodes) => {
            let problems = kube::unschedulable(&nodes);
            match problems.first() {
                None => Check {
                    name: "nodes",
                    status: Verdict::Ok,
                    detail: format!("{} node(s), pods can be scheduled", nodes.len()),
                    fix: None,
                    required: true,
                },
                Some(_) => Check {
                    name: "nodes",
                    status: Verdict::Broken,
                    detail: format!("no node takes new pods: {}", problems.join("; ")),
                    fix: Some("see the taint's cause above; `kubectl describe nodes`".into()),
                    required: true,
                },
            }
        }
        Err(e) => Check {
            name: "nodes",
            status: Verdict::Broken,
            detail: format!("{e:#}").lines().next().unwrap_or_default().into(),
            fix: Some("the kubeconfig's user needs `get nodes`".into()),
            required: false,
        },
    });
    out.push(platform_check(&c));
    if c.kube.flavor != Flavor::Microk8s {
        out.push(match c.kube.default_storage_class() {
            Ok(Some(class)) => Check {
                name: "storage",
                status: Verdict::Ok,
                detail: format!("default StorageClass {class}"),
                fix: None,
                required: false,
            },
            Ok(None) => Check {
                name: "storage",
                status: Verdict::Ok,
                detail: "no default StorageClass: bootstrap keeps the store's and Postgres' data in their pods".into(),
                fix: Some("install a provisioner, or pass bootstrap --storage-class".into()),
                required: false,
            },
            Err(e) => Check {
                name: "storage",
                status: Verdict::Skipped,
                detail: format!("{e:#}").lines().next().unwrap_or_default().into(),
                fix: None,
                required: false,
            },
        });
    }
    if c.kube.flavor == Flavor::Microk8s {
        let want = crate::targets::cluster::fetcher_image()
            .unwrap_or_else(|_| manifests::FETCHER_IMAGE.into());
        out.push(match c.kube.images() {
            Ok(i) if i.contains(&want) => Check {
                name: "sidecar",
                status: Verdict::Ok,
                detail: format!("{want} present"),
                fix: None,
                required: false,
            },
            Ok(_) => Check {
                name: "sidecar",
                status: Verdict::Missing,
                detail: format!("{want} not imported"),
                fix: Some("cargo xtask sidecar-image (deploy-sample imports it)".into()),
                required: false,
            },
            Err(e) => Check {
                name: "sidecar",
                status: Verdict::Broken,
                detail: format!("{e:#}").lines().next().unwrap_or_default().into(),
                fix: None,
                required: false,
            },
        });
    }
    out
}

/// What bootstrap deploys, by its objects: the store (ours or MinIO), Postgres, and the Secret
/// apps get `DATABASE_URL` from. Reachability is the `store` and `database` checks' job.
fn platform_check(c: &crate::targets::cluster::Cluster) -> Check {
    let has = |kind: &str, name: &str| {
        c.kube
            .get::<serde_json::Value>(kind, name)
            .map(|o| o.is_some())
    };
    let found = (|| -> Result<Vec<String>> {
        let mut present = Vec::new();
        for (kind, name) in [
            ("deployment", "aether-store"),
            ("deployment", "minio"),
            ("statefulset", "postgres"),
            ("secret", "aether-database"),
        ] {
            if has(kind, name)? {
                present.push(format!("{kind}/{name}"));
            }
        }
        Ok(present)
    })();
    let fix = match c.kube.flavor {
        Flavor::Microk8s => "cargo xtask bootstrap",
        Flavor::Kube { .. } => "cargo xtask --target kube bootstrap",
    };
    match found {
        Ok(p) if p.iter().any(|o| o.starts_with("deployment/")) && p.len() >= 3 => Check {
            name: "platform",
            status: Verdict::Ok,
            detail: p.join(", "),
            fix: None,
            required: false,
        },
        Ok(p) => Check {
            name: "platform",
            status: Verdict::Missing,
            detail: if p.is_empty() {
                "no store or Postgres deployed in the namespace".into()
            } else {
                format!("only {}", p.join(", "))
            },
            fix: Some(format!(
                "{fix} (or use your own: AETHER_S3_ENDPOINT, AETHER_DATABASE_URL)"
            )),
            required: false,
        },
        Err(e) => Check {
            name: "platform",
            status: Verdict::Skipped,
            detail: format!("{e:#}").lines().next().unwrap_or_default().into(),
            fix: None,
            required: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            url_host_port("postgres://u:p@127.0.0.1:30432/db"),
            Some(("127.0.0.1".into(), 30432))
        );
        assert_eq!(
            url_host_port("postgres://db.example/x"),
            Some(("db.example".into(), 5432))
        );
        assert_eq!(
            url_host_port("postgres://u:p:w@h:1/x"),
            Some(("h".into(), 1))
        );
    }
}
