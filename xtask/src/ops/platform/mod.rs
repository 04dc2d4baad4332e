//! The platform under the apps: `doctor` (what is there, what is missing, how to fix it;
//! changes nothing), `bootstrap` (MicroK8s, then MinIO and Postgres inside the cluster,
//! idempotently) and the manifests of both services.

pub mod bootstrap;
pub mod doctor;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use aether_artifact::store::{Store, DEFAULT_BUCKET};

use crate::config::Global;
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

/// The MinIO and Postgres objects as `bootstrap` applies them, credentials as placeholders.
pub fn render(ns: &str) -> Result<String> {
    let v = PlatformValues {
        ns: ns.into(),
        storage_class: manifests::STORAGE_CLASS.into(),
        minio_image: manifests::MINIO_IMAGE.into(),
        minio_node_port: manifests::MINIO_NODE_PORT,
        access_key: "REPLACE_ME".into(),
        secret_key: "REPLACE_ME".into(),
        read_access_key: "aether-read".into(),
        read_secret_key: "REPLACE_ME".into(),
        reader_job: manifests::minio_reader(DEFAULT_BUCKET, "aether-read", "REPLACE_ME").0,
        reader_policy: manifests::minio_reader(DEFAULT_BUCKET, "aether-read", "REPLACE_ME").1,
        postgres_image: manifests::POSTGRES_IMAGE.into(),
        postgres_node_port: manifests::POSTGRES_NODE_PORT,
        db_user: DB_USER.into(),
        db_password: "REPLACE_ME".into(),
        db_name: DB_NAME.into(),
        cluster_database_url: format!(
            "postgres://{DB_USER}:REPLACE_ME@postgres.{ns}.svc.cluster.local:5432/{DB_NAME}"
        ),
    };
    let mut out = String::new();
    for name in ["minio", "postgres"] {
        out.push_str("---\n");
        out.push_str(&manifests::render(name, &v)?);
    }
    Ok(out)
}

pub fn platform_values(c: &Cluster, global: &Global) -> Result<PlatformValues> {
    let store = global.store_layers()?;
    let (Some(ak), Some(sk), Some(rak), Some(rsk)) = (
        store.access_key,
        store.secret_key,
        store.read_access_key,
        store.read_secret_key,
    ) else {
        bail!("no store credentials: the credentials step did not run")
    };
    let bucket = store.bucket.unwrap_or_else(|| DEFAULT_BUCKET.into());
    let (reader_job, reader_policy) = manifests::minio_reader(&bucket, &rak, rsk.expose());
    let db = global
        .database_url()?
        .context("no database URL: the credentials step did not run")?;
    let pw = db
        .expose()
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .and_then(|(up, _)| up.split_once(':'))
        .map(|(_, p)| p.to_string())
        .context("the database URL has no password")?;
    let ns = c.kube.namespace.clone();
    Ok(PlatformValues {
        cluster_database_url: format!(
            "postgres://{DB_USER}:{pw}@postgres.{ns}.svc.cluster.local:5432/{DB_NAME}"
        ),
        ns,
        storage_class: manifests::STORAGE_CLASS.into(),
        minio_image: manifests::MINIO_IMAGE.into(),
        minio_node_port: manifests::MINIO_NODE_PORT,
        access_key: ak,
        secret_key: sk.expose().into(),
        read_access_key: rak,
        read_secret_key: rsk.expose().into(),
        reader_job,
        reader_policy,
        postgres_image: manifests::POSTGRES_IMAGE.into(),
        postgres_node_port: manifests::POSTGRES_NODE_PORT,
        db_user: DB_USER.into(),
        db_password: pw,
        db_name: DB_NAME.into(),
    })
}

/// Both services answer: the rollouts are complete, the store accepts our credentials (the
/// bucket is created), the database accepts connections.
pub fn verify(c: &Cluster, global: &Global) -> Result<()> {
    c.kube.rollout_status("deployment/minio", 300)?;
    c.kube.rollout_status("statefulset/postgres", 300)?;
    let store = c.store()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match store.ensure_bucket() {
            Ok(_) => break,
            Err(e)
                if std::time::Instant::now() < deadline
                    && e.kind == aether_artifact::store::ErrorKind::Unreachable =>
            {
                std::thread::sleep(Duration::from_secs(2))
            }
            Err(e) => return Err(e.into()),
        }
    }
    wait_reader(c, &store, global, deadline)?;
    let db = global
        .database_url()?
        .context("no database URL configured")?;
    loop {
        match doctor::database_reachable(&db) {
            Ok(_) => break,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_secs(2))
            }
            Err(e) => bail!("Postgres does not answer: {e}"),
        }
    }
    Ok(())
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
