//! One function per bootstrap step, and what a run records for later commands.

use anyhow::{Context, Result};
use xshell::Shell;

use aether_artifact::store::Secret;

use crate::config::{Global, ProjectConfig};
use crate::manifests;
use crate::targets::cluster::kube::host;
use crate::targets::cluster::Cluster;

use super::bootstrap::{Options, Step};
use super::*;

pub fn run(
    sh: &Shell,
    c: &Cluster,
    global: &Global,
    opts: &Options,
    layout: &mut Layout,
    s: &Step,
) -> Result<()> {
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
        Step::GenerateCredentials => generate_credentials(global, layout.store)?,
        Step::RecoverCredentials => recover_credentials(c, global, layout.store)?,
        Step::BuildStoreImage => {
            crate::images::store_server::run(sh, None)?;
            layout.store_image = crate::targets::cluster::store_image()?;
        }
        Step::ImportStoreImage => c.ensure_image(
            &layout.store_image,
            &crate::images::store_server::archive(),
            "AETHER_STORE_IMAGE",
            opts.image_import.as_deref(),
        )?,
        Step::DeployStore => {
            if let Some(name) = layout.store.workload() {
                let v = values(&ns, layout, &saved_creds(global)?, "unused", "unused");
                c.kube.apply(&manifests::render(name, &v)?)?;
            }
        }
        Step::BuildControlImage => {
            crate::images::control::run(sh, None)?;
            layout.control_image = Some(crate::targets::cluster::control_image()?);
        }
        Step::ImportControlImage => c.ensure_image(
            layout
                .control_image
                .as_deref()
                .context("no control plane image")?,
            &crate::images::control::archive(),
            "AETHER_CONTROL_IMAGE",
            opts.image_import.as_deref(),
        )?,
        Step::DeployControl => {
            let db = service_host(c, layout, "postgres")?
                .context("service/postgres has no address yet")?;
            let v = values(
                &ns,
                layout,
                &saved_creds(global)?,
                &db,
                &store_for_pods(c, global, layout)?,
            );
            c.kube.apply(&manifests::render("aether-control", &v)?)?;
        }
        Step::DeployPostgres => {
            let creds = saved_creds(global)?;
            // Without DNS the database's URL names the Service's cluster IP, which exists
            // once the Service does: apply, then apply again with the address.
            let host = match service_host(c, layout, "postgres")? {
                Some(h) => h,
                None => {
                    let v = values(&ns, layout, &creds, "pending", "unused");
                    c.kube.apply(&manifests::render("postgres", &v)?)?;
                    service_host(c, layout, "postgres")?
                        .context("service/postgres has no cluster IP")?
                }
            };
            let v = values(&ns, layout, &creds, &host, "unused");
            c.kube.apply(&manifests::render("postgres", &v)?)?;
        }
    }
    Ok(())
}

/// The store as the platform's pods reach it: its Service, or the external endpoint.
fn store_for_pods(c: &Cluster, global: &Global, layout: &Layout) -> Result<String> {
    match layout.store.workload() {
        Some(name) => {
            let host = service_host(c, layout, name)?
                .with_context(|| format!("service/{name} has no address yet"))?;
            Ok(format!("http://{host}:{}", aether_store::StoreEnv::PORT))
        }
        None => global
            .store_layers()?
            .endpoint
            .context("no store endpoint: set AETHER_S3_ENDPOINT"),
    }
}

/// The store's and the control plane's addresses as pods reach them, for `deploy-sample` to
/// hand them (the config file).
pub fn record_endpoints(c: &Cluster, global: &Global, layout: &Layout) -> Result<()> {
    let mut cfg = ProjectConfig::load(&global.state_dir())?;
    let before = serde_json::to_value(&cfg)?;
    if let Some(name) = layout.store.workload() {
        if let Some(host) = service_host(c, layout, name)? {
            cfg.cluster_store_endpoint =
                Some(format!("http://{host}:{}", aether_store::StoreEnv::PORT));
        }
    }
    if let Some(ctl) = cfg.control.as_mut() {
        ctl.cluster_url = match layout.control_image {
            Some(_) => service_host(c, layout, "aether-control")?
                .map(|h| format!("http://{h}:{}", aether_artifact::control::PORT)),
            None => None,
        };
    }
    if serde_json::to_value(&cfg)? != before {
        cfg.save(&global.state_dir())?;
    }
    Ok(())
}

/// The control plane's admin token: kept when there is one, else new.
fn ensure_control_token(cfg: &mut ProjectConfig) -> Result<()> {
    if cfg.control.is_none() {
        cfg.control = Some(crate::config::ControlConfig {
            url: None,
            cluster_url: None,
            admin_token: Secret::new(crate::config::random_hex(24)?),
        });
    }
    Ok(())
}

/// Credentials already given (environment or config) are kept; the rest is random.
fn generate_credentials(global: &Global, store: StoreKind) -> Result<()> {
    let layers = global.store_layers()?;
    let mut cfg = ProjectConfig::load(&global.state_dir())?;
    cfg.store.endpoint = cfg
        .store
        .endpoint
        .or(layers.endpoint.clone())
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
    // An external store's read-only key is the operator's to give (pods get none otherwise).
    if store == StoreKind::External {
        cfg.store.read_access_key = layers.read_access_key;
        cfg.store.read_secret_key = layers.read_secret_key;
    } else {
        cfg.store.read_access_key = Some(layers.read_access_key.unwrap_or("aether-read".into()));
        cfg.store.read_secret_key = Some(
            layers
                .read_secret_key
                .unwrap_or(Secret::new(crate::config::random_hex(24)?)),
        );
    }
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
    ensure_control_token(&mut cfg)?;
    cfg.save(&global.state_dir())
}

fn recover_credentials(c: &Cluster, global: &Global, store: StoreKind) -> Result<()> {
    let mut cfg = ProjectConfig::load(&global.state_dir())?;
    cfg.store.endpoint = cfg
        .store
        .endpoint
        .or(Some(crate::targets::cluster::DEFAULT_HOST_ENDPOINT.into()));
    if let Some((name, ak, sk)) = store.owner_secret() {
        let secret: k8s_openapi::api::core::v1::Secret =
            c.kube.get("secret", name)?.with_context(|| {
                format!(
                    "Secret {name} is gone; delete deployment/{} and rerun bootstrap",
                    store.workload().unwrap_or("?")
                )
            })?;
        let data = secret.data.unwrap_or_default();
        let get = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .with_context(|| format!("Secret {name} lacks {k}"))
        };
        cfg.store.access_key = Some(get(ak)?);
        cfg.store.secret_key = Some(Secret::new(get(sk)?));
        // Our store derives read-only keys itself; MinIO's read user lives in its Secret (a
        // MinIO from before pods got one has none: make one, its Job runs with the next apply).
        cfg.store.read_access_key =
            Some(get("AETHER_READ_USER").unwrap_or_else(|_| "aether-read".into()));
        cfg.store.read_secret_key = Some(Secret::new(match get("AETHER_READ_PASSWORD") {
            Ok(p) => p,
            Err(_) => crate::config::random_hex(24)?,
        }));
    }
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
    // The control plane's token as its Secret holds it (the CLI must present that one).
    if let Some(sec) = c
        .kube
        .get::<k8s_openapi::api::core::v1::Secret>("secret", "aether-control")?
    {
        if let Some(t) = sec
            .data
            .unwrap_or_default()
            .get(aether_artifact::control::ENV_ADMIN_TOKEN)
        {
            cfg.control = Some(crate::config::ControlConfig {
                url: None,
                cluster_url: None,
                admin_token: Secret::new(String::from_utf8_lossy(&t.0).into_owned()),
            });
        }
    }
    ensure_control_token(&mut cfg)?;
    cfg.save(&global.state_dir())
}
