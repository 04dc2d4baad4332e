//! The platform under the apps: `doctor` (what is there, what is missing, how to fix it;
//! changes nothing), `bootstrap` (on any cluster: MicroK8s' own steps where it is MicroK8s, then
//! an object store and Postgres inside the cluster, idempotently), `uninstall`, and the
//! manifests of both services.

pub mod bootstrap;
mod check;
mod control_check;
pub mod doctor;
mod steps;
pub mod uninstall;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use aether_artifact::store::{Secret, Store, DEFAULT_BUCKET};

use crate::config::{Global, ProjectConfig};
use crate::manifests::{self, PlatformValues};
use crate::targets::cluster::Cluster;
use crate::targets::Target;

/// MicroK8s channel bootstrap installs: native sidecars are on by default from 1.29, GA in 1.33.
pub const MICROK8S_CHANNEL: &str = "1.33/stable";
const MIN_MICROK8S: (u32, u32) = (1, 29);
const DB_USER: &str = "aether";
const DB_NAME: &str = "aether";

pub fn version_of(sh: &Shell, program: &str, args: &[&str]) -> Option<String> {
    cmd!(sh, "{program} {args...}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
}

/// "MicroK8s v1.33.1 revision 7996" → (1, 33).
pub fn parse_microk8s_version(s: &str) -> Option<(u32, u32)> {
    let v = s
        .split_whitespace()
        .find(|w| w.starts_with('v'))?
        .trim_start_matches('v');
    let mut it = v.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Which object store `bootstrap` provides.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreKind {
    /// The project's own S3 server (`aether-store`), built here and imported: no registry pull.
    #[default]
    Aether,
    /// MinIO (its community image; pulled by the nodes).
    Minio,
    /// Any S3 store you run (AWS, SeaweedFS, Garage, an existing MinIO): nothing deployed;
    /// give it with AETHER_S3_ENDPOINT and its keys.
    External,
}

impl StoreKind {
    /// The store's Deployment and Service (`None`: not deployed by bootstrap).
    pub fn workload(self) -> Option<&'static str> {
        match self {
            StoreKind::Aether => Some("aether-store"),
            StoreKind::Minio => Some("minio"),
            StoreKind::External => None,
        }
    }
    /// The Secret holding the store owner's keys, which a later run recovers them from.
    fn owner_secret(self) -> Option<(&'static str, &'static str, &'static str)> {
        use aether_store::StoreEnv;
        match self {
            StoreKind::Aether => Some((
                "aether-store-owner",
                StoreEnv::ACCESS_KEY,
                StoreEnv::SECRET_KEY,
            )),
            StoreKind::Minio => Some(("aether-minio", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")),
            StoreKind::External => None,
        }
    }
}

/// How the platform is laid out on this cluster, decided once per run from flags and the
/// cluster: every step and the printed plan read it.
#[derive(Debug, Clone)]
pub struct Layout {
    pub store: StoreKind,
    /// `None`: no StorageClass, the store's and database's data live in their pods.
    pub storage_class: Option<String>,
    /// Pods resolve Service names; without DNS they are given the Services' cluster IPs.
    pub dns: bool,
    pub store_image: String,
    pub postgres_image: String,
    /// `None`: no control plane (`bootstrap --no-control`); pods read the store with a key.
    pub control_image: Option<String>,
}

/// The image Postgres runs: `AETHER_POSTGRES_IMAGE` (e.g. one `cargo xtask image postgres`
/// built and the nodes imported), else the upstream image.
pub fn postgres_image() -> String {
    std::env::var("AETHER_POSTGRES_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| manifests::POSTGRES_IMAGE.into())
}

/// The platform's objects as `bootstrap` applies them with `store`, credentials as
/// placeholders.
pub fn render(ns: &str, store: StoreKind) -> Result<String> {
    let layout = Layout {
        store,
        storage_class: Some(manifests::STORAGE_CLASS.into()),
        dns: true,
        store_image: crate::targets::cluster::store_image()?,
        postgres_image: manifests::POSTGRES_IMAGE.into(),
        control_image: Some(crate::targets::cluster::control_image()?),
    };
    let store_host = store
        .workload()
        .map(|w| {
            format!(
                "http://{w}.{ns}.svc.cluster.local:{}",
                aether_store::StoreEnv::PORT
            )
        })
        .unwrap_or_else(|| "https://s3.example.com".into());
    let v = values(
        ns,
        &layout,
        &placeholders(),
        &format!("postgres.{ns}.svc.cluster.local"),
        &store_host,
    );
    let mut out = String::new();
    for name in store
        .workload()
        .into_iter()
        .chain(["postgres", "aether-control"])
    {
        out.push_str("---\n");
        out.push_str(&manifests::render(name, &v)?);
    }
    Ok(out)
}

/// The credentials in the manifests: the store owner's, the read-only user's (MinIO), the
/// database password.
pub struct Creds {
    pub access_key: String,
    pub secret_key: String,
    pub read_access_key: String,
    pub read_secret_key: String,
    pub bucket: String,
    pub region: String,
    pub db_password: String,
    /// The CLI's bearer token for the control plane.
    pub control_admin_token: String,
}

fn placeholders() -> Creds {
    Creds {
        access_key: "REPLACE_ME".into(),
        secret_key: "REPLACE_ME".into(),
        read_access_key: "aether-read".into(),
        read_secret_key: "REPLACE_ME".into(),
        bucket: DEFAULT_BUCKET.into(),
        region: aether_artifact::store::DEFAULT_REGION.into(),
        db_password: "REPLACE_ME".into(),
        control_admin_token: "REPLACE_ME".into(),
    }
}

/// The manifests' values; `store_for_pods` is the store's endpoint as pods reach it.
pub fn values(
    ns: &str,
    layout: &Layout,
    c: &Creds,
    db_host: &str,
    store_for_pods: &str,
) -> PlatformValues {
    let (reader_job, reader_policy) =
        manifests::minio_reader(&c.bucket, &c.read_access_key, &c.read_secret_key);
    // The key the control plane signs with: the owner's on our store (which it narrows to each
    // app's derived read key), else the read-only pair where there is one.
    let derive = layout.store == StoreKind::Aether;
    let (sign_ak, sign_sk) = if derive || c.read_secret_key.is_empty() {
        (&c.access_key, &c.secret_key)
    } else {
        (&c.read_access_key, &c.read_secret_key)
    };
    PlatformValues {
        ns: ns.into(),
        storage_class: layout.storage_class.clone(),
        store_image: layout.store_image.clone(),
        store_node_port: manifests::STORE_NODE_PORT,
        minio_image: manifests::MINIO_IMAGE.into(),
        minio_node_port: manifests::MINIO_NODE_PORT,
        access_key: c.access_key.clone(),
        secret_key: c.secret_key.clone(),
        read_access_key: c.read_access_key.clone(),
        read_secret_key: c.read_secret_key.clone(),
        reader_job,
        reader_policy,
        postgres_image: layout.postgres_image.clone(),
        postgres_node_port: manifests::POSTGRES_NODE_PORT,
        db_user: DB_USER.into(),
        db_password: c.db_password.clone(),
        db_name: DB_NAME.into(),
        cluster_database_url: format!(
            "postgres://{DB_USER}:{}@{db_host}:5432/{DB_NAME}",
            c.db_password
        ),
        control_image: layout.control_image.clone().unwrap_or_default(),
        control_node_port: aether_artifact::control::NODE_PORT,
        control_admin_token: c.control_admin_token.clone(),
        control_store: manifests::StoreValues {
            endpoint: store_for_pods.into(),
            region: c.region.clone(),
            bucket: c.bucket.clone(),
            access_key: sign_ak.clone(),
            secret_key: sign_sk.clone(),
            ca_pem: None,
        },
        control_derive_read_keys: derive,
    }
}

/// The credentials bootstrap saved (the credentials step runs before any deploy step).
pub fn saved_creds(global: &Global) -> Result<Creds> {
    let store = global.store_layers()?;
    let (Some(ak), Some(sk)) = (store.access_key, store.secret_key) else {
        bail!("no store credentials: the credentials step did not run")
    };
    // Only MinIO's reader Job uses these; an external store may have none.
    let rak = store
        .read_access_key
        .unwrap_or_else(|| "aether-read".into());
    let rsk = store.read_secret_key.unwrap_or_else(|| Secret::new(""));
    let db = global
        .database_url()?
        .context("no database URL: the credentials step did not run")?;
    Ok(Creds {
        access_key: ak,
        secret_key: sk.expose().into(),
        read_access_key: rak,
        read_secret_key: rsk.expose().into(),
        bucket: store.bucket.unwrap_or_else(|| DEFAULT_BUCKET.into()),
        region: store
            .region
            .unwrap_or_else(|| aether_artifact::store::DEFAULT_REGION.into()),
        db_password: password_of(db.expose()).context("the database URL has no password")?,
        control_admin_token: crate::config::ProjectConfig::load(&global.state_dir())?
            .control
            .map(|c| c.admin_token.expose().to_string())
            .unwrap_or_default(),
    })
}

fn password_of(url: &str) -> Option<String> {
    url.split_once("://")
        .and_then(|(_, r)| r.rsplit_once('@'))
        .and_then(|(up, _)| up.split_once(':'))
        .map(|(_, p)| p.to_string())
}

/// Where pods reach a Service of the namespace: its DNS name, or on a cluster without DNS its
/// cluster IP (stable for the Service's life; `None` until the Service exists).
pub fn service_host(c: &Cluster, layout: &Layout, name: &str) -> Result<Option<String>> {
    if layout.dns {
        return Ok(Some(format!(
            "{name}.{}.svc.cluster.local",
            c.kube.namespace
        )));
    }
    c.kube.cluster_ip(name)
}

/// Both services answer from this machine: the rollouts are complete, the store accepts our
/// credentials (the bucket is created), the database accepts connections. A cluster whose
/// NodePorts are not on 127.0.0.1 is reached on a node's address, saved for later commands.
pub fn verify(c: &Cluster, global: &Global, layout: &Layout) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    if let Some(w) = layout.store.workload() {
        c.kube.rollout_status(&format!("deployment/{w}"), 300)?;
    }
    c.kube.rollout_status("statefulset/postgres", 300)?;
    let default_host = |e: &str| e == crate::targets::cluster::DEFAULT_HOST_ENDPOINT;
    let layers = global.store_layers()?;
    if layout.store.workload().is_some() && layers.endpoint.as_deref().is_none_or(default_host) {
        let host = host_address(c, manifests::STORE_NODE_PORT, deadline)?;
        let mut cfg = ProjectConfig::load(&global.state_dir())?;
        let endpoint = format!("http://{host}:{}", manifests::STORE_NODE_PORT);
        if cfg.store.endpoint.as_deref() != Some(&endpoint) {
            eprintln!("the store answers on {endpoint}");
            cfg.store.endpoint = Some(endpoint);
            cfg.save(&global.state_dir())?;
        }
    }
    let store = c.store()?;
    loop {
        match store.ensure_bucket() {
            Ok(_) => break,
            Err(e)
                if std::time::Instant::now() < deadline
                    && e.kind == aether_artifact::store::ErrorKind::Unreachable =>
            {
                // pace: the Service's endpoints follow the pod's readiness.
                std::thread::sleep(Duration::from_millis(500))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if layout.store == StoreKind::Minio {
        wait_reader(c, &store, global, deadline)?;
    }
    let was = format!("@127.0.0.1:{}/", manifests::POSTGRES_NODE_PORT);
    let mut cfg = ProjectConfig::load(&global.state_dir())?;
    if let Some(url) = cfg.database_url.as_ref().map(|u| u.expose().to_string()) {
        if url.contains(&was) {
            let host = host_address(c, manifests::POSTGRES_NODE_PORT, deadline)?;
            if host != "127.0.0.1" {
                let local = format!("@{host}:{}/", manifests::POSTGRES_NODE_PORT);
                cfg.database_url = Some(Secret::new(url.replace(&was, &local)));
                cfg.save(&global.state_dir())?;
            }
        }
    }
    let db = global
        .database_url()?
        .context("no database URL configured")?;
    loop {
        match doctor::database_reachable(&db) {
            Ok(_) => break,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            Err(e) => bail!("Postgres does not answer: {e}"),
        }
    }
    if layout.control_image.is_some() {
        verify_control(c, global, deadline)?;
    }
    Ok(())
}

/// The control plane is rolled out and answers this machine with the saved admin token (its
/// /healthz asks the database); its address is saved for later commands.
fn verify_control(c: &Cluster, global: &Global, deadline: std::time::Instant) -> Result<()> {
    use aether_artifact::control::{Client, NODE_PORT};
    c.kube.rollout_status("deployment/aether-control", 300)?;
    let host = host_address(c, NODE_PORT, deadline)?;
    let mut cfg = ProjectConfig::load(&global.state_dir())?;
    let ctl = cfg
        .control
        .as_mut()
        .context("no control plane token: the credentials step did not run")?;
    let url = format!("http://{host}:{NODE_PORT}");
    let client = Client::with_token(&url, ctl.admin_token.clone(), Duration::from_secs(5));
    loop {
        // /v1/apps proves the token as well as the database.
        match client.apps() {
            Ok(_) => break,
            Err(_) if std::time::Instant::now() < deadline => {
                // pace: the Service's endpoints follow the pod's readiness.
                std::thread::sleep(Duration::from_millis(500))
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("the control plane does not answer"))
            }
        }
    }
    if ctl.url.as_deref() != Some(&url) {
        eprintln!("the control plane answers on {url}");
        ctl.url = Some(url);
        cfg.save(&global.state_dir())?;
    }
    Ok(())
}

/// The first address of this machine's candidates (127.0.0.1, then each node's InternalIP)
/// that accepts a connection on `port`: kube-proxy programs a new NodePort a moment after the
/// Service appears, and kind or k3d nodes are not this machine.
fn host_address(c: &Cluster, port: u16, deadline: std::time::Instant) -> Result<String> {
    let mut candidates = vec!["127.0.0.1".to_string()];
    candidates.extend(
        c.kube
            .nodes()?
            .iter()
            .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone()),
    );
    loop {
        for h in &candidates {
            let Ok(ip) = h.parse::<std::net::IpAddr>() else {
                continue;
            };
            let addr = std::net::SocketAddr::new(ip, port);
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Ok(h.clone());
            }
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "NodePort {port} answers on none of {}: is kube-proxy running? Otherwise                  forward it yourself (`kubectl -n {} port-forward svc/<name> {port}:<port>`)                  and set AETHER_S3_ENDPOINT / AETHER_DATABASE_URL",
                candidates.join(", "),
                c.kube.namespace
            );
        }
        // pace: kube-proxy programs the port within a second or two.
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The read-only user pods get exists: the store accepts its signature (the Job that creates
/// it runs once MinIO answers).
fn wait_reader(
    c: &Cluster,
    store: &Store,
    global: &Global,
    deadline: std::time::Instant,
) -> Result<()> {
    use aether_artifact::store::{ErrorKind, StoreConfig};
    let layers = global.store_layers()?;
    let (Some(ak), Some(sk)) = (layers.read_access_key, layers.read_secret_key) else {
        bail!("no read-only store key configured: rerun `cargo xtask bootstrap`")
    };
    let (job, _) = manifests::minio_reader(&store.config().bucket, &ak, sk.expose());
    let reader = Store::new(StoreConfig {
        access_key: ak.clone(),
        secret_key: sk,
        ..store.config().clone()
    })?;
    loop {
        match reader.exists(&format!("{}.aether-probe", aether_artifact::KEY_PREFIX)) {
            Ok(_) => return Ok(()),
            Err(e)
                if std::time::Instant::now() < deadline
                    && matches!(e.kind, ErrorKind::BadCredentials | ErrorKind::Forbidden) =>
            {
                std::thread::sleep(Duration::from_secs(2))
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the store does not accept the pods' read-only user {ak}: see \
                     `kubectl -n {} logs job/{job}`",
                    c.kube.namespace
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microk8s_versions() {
        assert_eq!(
            parse_microk8s_version("MicroK8s v1.33.1 revision 7996"),
            Some((1, 33))
        );
        assert_eq!(
            parse_microk8s_version("MicroK8s v1.28.15 revision 7001"),
            Some((1, 28))
        );
        assert!(parse_microk8s_version("MicroK8s v1.28.15") < Some(MIN_MICROK8S));
        assert_eq!(parse_microk8s_version("garbage"), None);
    }
}
