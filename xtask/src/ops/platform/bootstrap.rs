//! `bootstrap`: install or start what is missing, idempotently, from a probe of what is there
//! and a plan of the steps. On MicroK8s: the snap, its start and addons first. On any cluster:
//! the namespace, credentials, the object store (ours, MinIO, or an external one), Postgres.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Result};
use xshell::Shell;

use crate::config::{Global, ProjectConfig};
use crate::manifests;
use crate::targets::cluster::kube::{host, Flavor};
use crate::targets::cluster::Cluster;
use crate::targets::{Kind, TargetArgs};

use super::*;

/// What the user asked for beyond the target.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub yes: bool,
    pub dry_run: bool,
    pub store: StoreKind,
    pub storage_class: Option<String>,
    /// Loads an image archive into the nodes (`{archive}` replaced), as `deploy-sample`'s.
    pub image_import: Option<String>,
    /// No control plane: pods read the store with a per-app key.
    pub no_control: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    InstallMicrok8s,
    StartMicrok8s,
    EnableAddon(&'static str),
    CreateNamespace,
    GenerateCredentials,
    RecoverCredentials,
    BuildStoreImage,
    ImportStoreImage,
    DeployStore,
    DeployPostgres,
    BuildControlImage,
    ImportControlImage,
    DeployControl,
}

impl Step {
    fn sudo(&self) -> bool {
        matches!(self, Step::InstallMicrok8s | Step::StartMicrok8s)
    }
    fn describe(&self, ns: &str, l: &Layout) -> String {
        let volume = |size: &str| {
            match &l.storage_class {
            Some(c) => format!("a {size} volume of class {c}"),
            None => "its data in the pod (no StorageClass: lost when the pod goes; pass --storage-class to keep it)".into(),
        }
        };
        match self {
            Step::InstallMicrok8s => format!("install MicroK8s: sudo snap install microk8s --classic --channel={MICROK8S_CHANNEL}"),
            Step::StartMicrok8s => "start MicroK8s: sudo microk8s start, then wait until it is ready".into(),
            Step::EnableAddon(a) => format!("enable the {a} addon: microk8s enable {a}"),
            Step::CreateNamespace => format!("create namespace {ns} (restricted Pod Security)"),
            Step::GenerateCredentials => "generate store and database credentials (saved to .aether/config.json, mode 0600, and to Secrets; never printed)".into(),
            Step::RecoverCredentials => "read the existing credentials from the cluster's Secrets into .aether/config.json (mode 0600)".into(),
            Step::BuildStoreImage => "build the store's image: cargo xtask image store (a static binary, FROM scratch)".into(),
            Step::ImportStoreImage => format!("load {} into the cluster's nodes", crate::images::store_server::NAME),
            Step::DeployStore => match l.store {
                StoreKind::Aether => format!("deploy the store (aether-store) with {}, NodePort {}", volume("10Gi"), manifests::STORE_NODE_PORT),
                StoreKind::Minio => format!("deploy MinIO ({}) with {}, NodePort {}", manifests::MINIO_IMAGE, volume("10Gi"), manifests::MINIO_NODE_PORT),
                StoreKind::External => "use the external store (nothing deployed)".into(),
            },
            Step::DeployPostgres => format!("deploy Postgres ({}) with {}, NodePort {}", l.postgres_image, volume("5Gi"), manifests::POSTGRES_NODE_PORT),
            Step::BuildControlImage => "build the control plane's image: cargo xtask image control (a static binary, FROM scratch)".into(),
            Step::ImportControlImage => format!("load {} into the cluster's nodes", crate::images::control::NAME),
            Step::DeployControl => format!("deploy the control plane (aether-control; records in Postgres; may create TokenReviews, nothing else), NodePort {}", aether_artifact::control::NODE_PORT),
        }
    }
}

/// What is there now, as far as can be seen without changing anything.
#[derive(Debug, Default)]
pub struct Inventory {
    /// `None` on a cluster that is not MicroK8s.
    pub microk8s: Option<Microk8s>,
    pub namespace: bool,
    pub store: bool,
    pub postgres: bool,
    pub credentials: bool,
    /// The store image: `None` when this store needs none; `Some(false)` to build.
    pub store_archive: Option<bool>,
    pub store_image_on_nodes: bool,
    pub control: Control,
}

/// The control plane's part of the inventory.
#[derive(Debug, Default, Clone, Copy)]
pub struct Control {
    pub wanted: bool,
    /// Its Deployment runs the image this run would deploy.
    pub current: bool,
    /// The image archive: `None` when an image in a registry is given; `Some(false)` to build.
    pub archive: Option<bool>,
    pub image_on_nodes: bool,
}

#[derive(Debug, Default)]
pub struct Microk8s {
    pub installed: bool,
    pub running: bool,
    pub disabled_addons: Vec<&'static str>,
}

/// The cluster to set up: the one asked for, else MicroK8s (which bootstrap can install).
fn kind_of(targs: &TargetArgs) -> Result<Kind> {
    Ok(match targs.target {
        Some(Kind::Local) => bail!(
            "bootstrap sets up a cluster; the local target needs none (its store is embedded): \
             pass --target microk8s or --target kube"
        ),
        Some(k) => k,
        None => Kind::Microk8s,
    })
}

pub fn inventory(
    sh: &Shell,
    c: &Cluster,
    global: &Global,
    opts: &Options,
) -> Result<(Inventory, Option<Layout>)> {
    let mut p = Inventory {
        credentials: have_credentials(global, opts)?,
        // An external store is there by definition: verify asks it.
        store: opts.store == StoreKind::External,
        ..Default::default()
    };
    if c.kube.flavor == Flavor::Microk8s {
        let mut mk = Microk8s {
            installed: host::microk8s_version(sh).is_some(),
            ..Default::default()
        };
        mk.running = mk.installed && c.kube.microk8s_wait_ready(10).is_ok();
        if mk.running {
            for a in ["dns", "hostpath-storage"] {
                if !c.kube.addon_enabled(a)? {
                    mk.disabled_addons.push(a);
                }
            }
        }
        let running = mk.running;
        p.microk8s = Some(mk);
        if !running {
            if opts.store == StoreKind::Aether && store_image_given().is_none() {
                p.store_archive = Some(crate::images::store_server::archive().exists());
            }
            p.control = Control {
                wanted: !opts.no_control,
                archive: (!opts.no_control && control_image_given().is_none())
                    .then(|| crate::images::control::archive().exists()),
                ..Default::default()
            };
            return Ok((p, None));
        }
    }
    let layout = decide_layout(c, opts)?;
    let ns = c.kube.namespace.clone();
    p.namespace = c.kube.get::<serde_json::Value>("namespace", &ns)?.is_some();
    let mut store_runs = None;
    if p.namespace {
        p.store = match opts.store.workload() {
            Some(w) => {
                let d = c.kube.get::<serde_json::Value>("deployment", w)?;
                store_runs = d.as_ref().and_then(|d| {
                    d["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .map(str::to_string)
                });
                d.is_some()
            }
            None => true,
        };
        p.postgres = c
            .kube
            .get::<serde_json::Value>("statefulset", "postgres")?
            .is_some();
    }
    if let Some(image) = &layout.control_image {
        let runs = match p.namespace {
            true => c
                .kube
                .get::<serde_json::Value>("deployment", "aether-control")?
                .and_then(|d| {
                    d["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .map(str::to_string)
                }),
            false => None,
        };
        let archive = control_image_given()
            .is_none()
            .then(|| crate::images::control::archive().exists());
        p.control = Control {
            wanted: true,
            current: runs.as_deref() == Some(image.as_str()),
            archive,
            image_on_nodes: archive == Some(true)
                && (runs.as_deref() == Some(image.as_str()) || c.has_image(image)?),
        };
    }
    if opts.store == StoreKind::Aether && store_image_given().is_none() {
        let archive = crate::images::store_server::archive().exists();
        p.store_archive = Some(archive);
        // The store running this very image had it imported; the nodes' image lists lag
        // behind an import by up to a status update (10 s), so they are asked only otherwise.
        p.store_image_on_nodes = archive
            && (store_runs.as_deref() == Some(layout.store_image.as_str())
                || c.has_image(&layout.store_image)?);
    }
    Ok((p, Some(layout)))
}

/// A store image in a registry (`AETHER_STORE_IMAGE`): the kubelet pulls it, nothing to load.
fn store_image_given() -> Option<String> {
    std::env::var("AETHER_STORE_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
}

/// The same for the control plane (`AETHER_CONTROL_IMAGE`).
fn control_image_given() -> Option<String> {
    std::env::var("AETHER_CONTROL_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Decides where data lives and how pods find Services.
fn decide_layout(c: &Cluster, opts: &Options) -> Result<Layout> {
    let mk = c.kube.flavor == Flavor::Microk8s;
    let storage_class = match &opts.storage_class {
        Some(s) => Some(s.clone()),
        None if mk => Some(manifests::STORAGE_CLASS.into()),
        None => c.kube.default_storage_class()?,
    };
    Ok(Layout {
        store: opts.store,
        storage_class,
        // MicroK8s' dns addon is one of bootstrap's steps.
        dns: mk || c.kube.resolves_services()?,
        store_image: crate::targets::cluster::store_image()?,
        postgres_image: postgres_image(),
        control_image: match opts.no_control {
            true => None,
            false => Some(crate::targets::cluster::control_image()?),
        },
    })
}

/// The config file holds store credentials and a database URL (the environment may override
/// them at use time, but a later run without it must still work).
fn have_credentials(global: &Global, opts: &Options) -> Result<bool> {
    let store = opts.store;
    let cfg = ProjectConfig::load(&global.state_dir())?;
    Ok(cfg.store.access_key.is_some()
        && (opts.no_control || cfg.control.is_some())
        && cfg.store.secret_key.is_some()
        && (store == StoreKind::External
            || (cfg.store.read_access_key.is_some() && cfg.store.read_secret_key.is_some()))
        && cfg.database_url.is_some())
}

pub fn plan(p: &Inventory) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(mk) = &p.microk8s {
        if !mk.installed {
            steps.push(Step::InstallMicrok8s);
        }
        if !mk.running {
            steps.push(Step::StartMicrok8s);
        }
        // Nothing is known about addons on a cluster that is not running yet: plan both.
        let addons: Vec<&'static str> = if mk.running {
            mk.disabled_addons.clone()
        } else {
            vec!["dns", "hostpath-storage"]
        };
        steps.extend(addons.into_iter().map(Step::EnableAddon));
    }
    if !p.namespace {
        steps.push(Step::CreateNamespace);
    }
    if !p.credentials {
        steps.push(if p.store && p.namespace {
            Step::RecoverCredentials
        } else {
            Step::GenerateCredentials
        });
    }
    match p.store_archive {
        Some(false) => steps.extend([Step::BuildStoreImage, Step::ImportStoreImage]),
        Some(true) if !p.store_image_on_nodes => steps.push(Step::ImportStoreImage),
        _ => {}
    }
    // A store image the nodes lack is a new build: the running store moves to it.
    if !p.store || (p.store_archive.is_some() && !p.store_image_on_nodes) {
        steps.push(Step::DeployStore);
    }
    if !p.postgres {
        steps.push(Step::DeployPostgres);
    }
    let c = p.control;
    if c.wanted {
        match c.archive {
            Some(false) => steps.extend([Step::BuildControlImage, Step::ImportControlImage]),
            Some(true) if !c.image_on_nodes => steps.push(Step::ImportControlImage),
            _ => {}
        }
        if !c.current || (c.archive.is_some() && !c.image_on_nodes) {
            steps.push(Step::DeployControl);
        }
    }
    steps
}

pub fn bootstrap(sh: &Shell, global: &Global, targs: &TargetArgs, opts: &Options) -> Result<()> {
    let c = targs.open_cluster(sh, global, kind_of(targs)?);
    let ns = c.kube.namespace.clone();
    let (p, known) = inventory(sh, &c, global, opts)?;
    // A MicroK8s that is not running yet: its layout is MicroK8s' own.
    let mut layout = known.clone().unwrap_or(Layout {
        store: opts.store,
        storage_class: Some(
            opts.storage_class
                .clone()
                .unwrap_or(manifests::STORAGE_CLASS.into()),
        ),
        dns: true,
        store_image: crate::images::store_server::NAME.into(),
        postgres_image: postgres_image(),
        control_image: (!opts.no_control).then(|| crate::images::control::NAME.into()),
    });
    let steps = plan(&p);
    if steps.is_empty() {
        println!("plan: nothing to do: namespace {ns}, the store, Postgres and the control plane are in place");
    } else {
        println!("plan:");
        for (i, s) in steps.iter().enumerate() {
            println!(
                "  {}. {}{}",
                i + 1,
                s.describe(&ns, &layout),
                if s.sudo() { " [sudo]" } else { "" }
            );
        }
    }
    if opts.dry_run {
        println!("dry run: nothing was changed");
        return Ok(());
    }
    for (i, s) in steps.iter().enumerate() {
        eprintln!(
            "step {}/{}: {}",
            i + 1,
            steps.len(),
            s.describe(&ns, &layout)
        );
        if s.sudo()
            && !opts.yes
            && !confirm(&format!(
                "this step runs sudo: {}. Go ahead?",
                s.describe(&ns, &layout)
            ))?
        {
            bail!("stopped before a sudo step; run it yourself or rerun with --yes");
        }
        steps::run(sh, &c, global, opts, &mut layout, s)?;
        // A MicroK8s that was not running could not be asked before.
        if *s == Step::StartMicrok8s {
            layout = decide_layout(&c, opts)?;
        }
    }
    steps::record_endpoints(&c, global, &layout)?;
    verify(&c, global, &layout)?;
    if steps.is_empty() {
        eprintln!(
            "everything was already in place; the store, Postgres and the control plane answer"
        );
    } else {
        eprintln!("bootstrap done; the store, Postgres and the control plane answer");
    }
    if layout.storage_class.is_none() {
        eprintln!("note: no StorageClass, so the store's and Postgres' data live in their pods and go with them; rerun with --storage-class to keep it");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let nothing = Inventory {
            microk8s: Some(Microk8s::default()),
            store_archive: Some(false),
            ..Default::default()
        };
        assert_eq!(
            plan(&nothing),
            [
                Step::InstallMicrok8s,
                Step::StartMicrok8s,
                Step::EnableAddon("dns"),
                Step::EnableAddon("hostpath-storage"),
                Step::CreateNamespace,
                Step::GenerateCredentials,
                Step::BuildStoreImage,
                Step::ImportStoreImage,
                Step::DeployStore,
                Step::DeployPostgres
            ]
        );
        let with_control = Inventory {
            microk8s: None,
            control: Control {
                wanted: true,
                archive: Some(false),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            &plan(&with_control)[4..],
            [
                Step::BuildControlImage,
                Step::ImportControlImage,
                Step::DeployControl
            ]
        );
        let up = Inventory {
            microk8s: None,
            namespace: true,
            store: true,
            postgres: true,
            credentials: true,
            store_archive: Some(true),
            store_image_on_nodes: true,
            control: Control {
                wanted: true,
                current: true,
                archive: Some(true),
                image_on_nodes: true,
            },
        };
        assert!(plan(&up).is_empty());
        let lost_config = Inventory {
            credentials: false,
            ..up
        };
        assert_eq!(plan(&lost_config), [Step::RecoverCredentials]);
        let rebuilt_image = Inventory {
            store_image_on_nodes: false,
            control: Control {
                image_on_nodes: false,
                ..up.control
            },
            ..lost_config
        };
        assert_eq!(
            plan(&rebuilt_image),
            [
                Step::RecoverCredentials,
                Step::ImportStoreImage,
                Step::DeployStore,
                Step::ImportControlImage,
                Step::DeployControl
            ]
        );
    }
}
