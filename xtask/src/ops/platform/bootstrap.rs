//! `bootstrap`: install or start what is missing (MicroK8s, its addons, the namespace, MinIO
//! and Postgres), idempotently, from a probe of what is there and a plan of the steps.

use std::io::{BufRead, IsTerminal, Write};

use aether_artifact::store::Secret;
use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::config::{Global, ProjectConfig};
use crate::manifests::{self};
use crate::targets::cluster::Cluster;
use crate::targets::{Kind, TargetArgs};

use super::*;
use crate::targets::cluster::kube::host;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    InstallMicrok8s,
    StartMicrok8s,
    EnableAddon(&'static str),
    CreateNamespace,
    GenerateCredentials,
    RecoverCredentials,
    DeployMinio,
    DeployPostgres,
}

impl Step {
    fn sudo(&self) -> bool {
        matches!(self, Step::InstallMicrok8s | Step::StartMicrok8s)
    }
    fn describe(&self, ns: &str) -> String {
        match self {
            Step::InstallMicrok8s => format!("install MicroK8s: sudo snap install microk8s --classic --channel={MICROK8S_CHANNEL}"),
            Step::StartMicrok8s => "start MicroK8s: sudo microk8s start, then wait until it is ready".into(),
            Step::EnableAddon(a) => format!("enable the {a} addon: microk8s enable {a}"),
            Step::CreateNamespace => format!("create namespace {ns}"),
            Step::GenerateCredentials => "generate store and database credentials (saved to .aether/config.json, mode 0600, and to Secrets; never printed)".into(),
            Step::RecoverCredentials => "read the existing credentials from the cluster's Secrets into .aether/config.json (mode 0600)".into(),
            Step::DeployMinio => format!("deploy MinIO ({}) with a 10Gi volume, NodePort {}", manifests::MINIO_IMAGE, manifests::MINIO_NODE_PORT),
            Step::DeployPostgres => format!("deploy Postgres ({}) with a 5Gi volume, NodePort {}", manifests::POSTGRES_IMAGE, manifests::POSTGRES_NODE_PORT),
        }
    }
}

/// What is there now, as far as can be seen without changing anything.
#[derive(Debug, Default)]
pub struct Inventory {
    pub microk8s: Option<String>,
    pub running: bool,
    pub disabled_addons: Vec<&'static str>,
    pub namespace: bool,
    pub minio: bool,
    pub postgres: bool,
    pub credentials: bool,
}

pub fn inventory(sh: &Shell, c: &Cluster, global: &Global) -> Result<Inventory> {
    let mut p = Inventory {
        credentials: have_credentials(global)?,
        ..Default::default()
    };
    p.microk8s = host::microk8s_version(sh);
    if p.microk8s.is_none() {
        return Ok(p);
    }
    p.running = c.kube.microk8s_wait_ready(10).is_ok();
    if !p.running {
        return Ok(p);
    }
    for a in ["dns", "hostpath-storage"] {
        if !c.kube.addon_enabled(a)? {
            p.disabled_addons.push(a);
        }
    }
    let ns = c.kube.namespace.clone();
    p.namespace = c.kube.get::<serde_json::Value>("namespace", &ns)?.is_some();
    if p.namespace {
        p.minio = c
            .kube
            .get::<serde_json::Value>("deployment", "minio")?
            .is_some();
        p.postgres = c
            .kube
            .get::<serde_json::Value>("statefulset", "postgres")?
            .is_some();
    }
    Ok(p)
}

/// The config file holds store credentials and a database URL (the environment may override
/// them at use time, but a later run without it must still work).
fn have_credentials(global: &Global) -> Result<bool> {
    let cfg = ProjectConfig::load(&global.state_dir())?;
    Ok(cfg.store.access_key.is_some()
        && cfg.store.secret_key.is_some()
        && cfg.store.read_access_key.is_some()
        && cfg.store.read_secret_key.is_some()
        && cfg.database_url.is_some())
}

pub fn plan(p: &Inventory) -> Vec<Step> {
    let mut steps = Vec::new();
    if p.microk8s.is_none() {
        steps.push(Step::InstallMicrok8s);
    }
    if !p.running {
        steps.push(Step::StartMicrok8s);
    }
    // Nothing is known about addons on a cluster that is not running yet: plan both.
    let addons: Vec<&'static str> = if p.running {
        p.disabled_addons.clone()
    } else {
        vec!["dns", "hostpath-storage"]
    };
    steps.extend(addons.into_iter().map(Step::EnableAddon));
    if !p.namespace {
        steps.push(Step::CreateNamespace);
    }
    if !p.credentials {
        steps.push(if p.minio {
            Step::RecoverCredentials
        } else {
            Step::GenerateCredentials
        });
    }
    if !p.minio {
        steps.push(Step::DeployMinio);
    }
    if !p.postgres {
        steps.push(Step::DeployPostgres);
    }
    steps
}

pub fn bootstrap(
    sh: &Shell,
    global: &Global,
    targs: &TargetArgs,
    yes: bool,
    dry_run: bool,
) -> Result<()> {
    let c = targs.open_cluster(sh, global, Kind::Microk8s);
    let ns = c.kube.namespace.clone();
    let p = inventory(sh, &c, global)?;
    let steps = plan(&p);
    if steps.is_empty() {
        println!("plan: nothing to do: MicroK8s, addons, namespace {ns}, MinIO and Postgres are in place");
    } else {
        println!("plan:");
        for (i, s) in steps.iter().enumerate() {
            println!(
                "  {}. {}{}",
                i + 1,
                s.describe(&ns),
                if s.sudo() { " [sudo]" } else { "" }
            );
        }
    }
    if dry_run {
        println!("dry run: nothing was changed");
        return Ok(());
    }
    for (i, s) in steps.iter().enumerate() {
        eprintln!("step {}/{}: {}", i + 1, steps.len(), s.describe(&ns));
        if s.sudo()
            && !yes
            && !confirm(&format!(
                "this step runs sudo: {}. Go ahead?",
                s.describe(&ns)
            ))?
        {
            bail!("stopped before a sudo step; run it yourself or rerun with --yes");
        }
        run_step(sh, &c, global, s)?;
    }
    verify(&c, global)?;
    if steps.is_empty() {
        eprintln!("everything was already in place; MinIO and Postgres answer");
    } else {
        eprintln!("bootstrap done; MinIO and Postgres answer");
    }
    Ok(())
}

fn confirm(q: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{q} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn run_step(sh: &Shell, c: &Cluster, global: &Global, s: &Step) -> Result<()> {
    let ns = c.kube.namespace.clone();
    match s {
        Step::InstallMicrok8s => host::install_microk8s(sh, MICROK8S_CHANNEL)?,
        Step::StartMicrok8s => {
            host::start_microk8s(sh)?;
            c.kube.microk8s_wait_ready(300)?;
        }
        Step::EnableAddon(a) => c.kube.enable(a)?,
        Step::CreateNamespace => {
            c.kube.apply(&manifests::render(
                "namespace",
                &serde_json::json!({ "ns": ns }),
            )?)?;
        }
        Step::GenerateCredentials => {
            let layers = global.store_layers()?;
            let mut cfg = ProjectConfig::load(&global.state_dir())?;
            // Credentials already given (environment or config) are kept; the rest is random.
            cfg.store.endpoint = cfg
                .store
                .endpoint
                .or(Some(crate::targets::cluster::DEFAULT_HOST_ENDPOINT.into()));
            cfg.store.access_key = Some(
                layers
                    .access_key
                    .unwrap_or(format!("aether-{}", crate::config::random_hex(6)?)),
            );
            cfg.store.secret_key = Some(
                layers
                    .secret_key
                    .unwrap_or(Secret::new(crate::config::random_hex(24)?)),
            );
            cfg.store.read_access_key =
                Some(layers.read_access_key.unwrap_or("aether-read".into()));
            cfg.store.read_secret_key = Some(
                layers
                    .read_secret_key
                    .unwrap_or(Secret::new(crate::config::random_hex(24)?)),
            );
            if let Some(url) = std::env::var("AETHER_DATABASE_URL")
                .ok()
                .filter(|u| !u.is_empty())
            {
                cfg.database_url = Some(Secret::new(url));
            }
            if cfg.database_url.is_none() {
                let pw = crate::config::random_hex(18)?;
                cfg.database_url = Some(Secret::new(format!(
                    "postgres://{DB_USER}:{pw}@127.0.0.1:{}/{DB_NAME}",
                    manifests::POSTGRES_NODE_PORT
                )));
            }
            cfg.save(&global.state_dir())?;
        }
        Step::RecoverCredentials => {
            let secret: k8s_openapi::api::core::v1::Secret =
                c.kube.get("secret", "aether-minio")?.context(
                    "Secret aether-minio is gone; delete the minio Deployment and rerun bootstrap",
                )?;
            let data = secret.data.unwrap_or_default();
            let get = |k: &str| {
                data.get(k)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .with_context(|| format!("Secret aether-minio lacks {k}"))
            };
            let mut cfg = ProjectConfig::load(&global.state_dir())?;
            cfg.store.endpoint = cfg
                .store
                .endpoint
                .or(Some(crate::targets::cluster::DEFAULT_HOST_ENDPOINT.into()));
            cfg.store.access_key = Some(get("MINIO_ROOT_USER")?);
            cfg.store.secret_key = Some(Secret::new(get("MINIO_ROOT_PASSWORD")?));
            // A MinIO from before pods got a read-only user has none: make one (the Job that
            // creates it runs with the next apply).
            cfg.store.read_access_key =
                Some(get("AETHER_READ_USER").unwrap_or_else(|_| "aether-read".into()));
            cfg.store.read_secret_key = Some(Secret::new(match get("AETHER_READ_PASSWORD") {
                Ok(p) => p,
                Err(_) => crate::config::random_hex(24)?,
            }));
            if let Some(pg) = c
                .kube
                .get::<k8s_openapi::api::core::v1::Secret>("secret", "aether-postgres")?
            {
                if let Some(pw) = pg.data.unwrap_or_default().get("POSTGRES_PASSWORD") {
                    let pw = String::from_utf8_lossy(&pw.0).into_owned();
                    cfg.database_url = Some(Secret::new(format!(
                        "postgres://{DB_USER}:{pw}@127.0.0.1:{}/{DB_NAME}",
                        manifests::POSTGRES_NODE_PORT
                    )));
                }
            }
            cfg.save(&global.state_dir())?;
        }
        Step::DeployMinio | Step::DeployPostgres => {
            let v = platform_values(c, global)?;
            let name = if *s == Step::DeployMinio {
                "minio"
            } else {
                "postgres"
            };
            c.kube.apply(&manifests::render(name, &v)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let nothing = Inventory::default();
        assert_eq!(
            plan(&nothing),
            [
                Step::InstallMicrok8s,
                Step::StartMicrok8s,
                Step::EnableAddon("dns"),
                Step::EnableAddon("hostpath-storage"),
                Step::CreateNamespace,
                Step::GenerateCredentials,
                Step::DeployMinio,
                Step::DeployPostgres
            ]
        );
        let up = Inventory {
            microk8s: Some("v1.33".into()),
            running: true,
            namespace: true,
            minio: true,
            postgres: true,
            credentials: true,
            ..Default::default()
        };
        assert!(plan(&up).is_empty());
        let lost_config = Inventory {
            credentials: false,
            ..up
        };
        assert_eq!(plan(&lost_config), [Step::RecoverCredentials]);
    }
}
