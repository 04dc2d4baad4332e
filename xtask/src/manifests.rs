//! Rendering of the templates in `manifests/` (minijinja, strict: a missing variable is an
//! error, never an empty string). Every value goes through the `q` filter, so names and credentials
//! are quoted YAML scalars whatever they contain.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use minijinja::{Environment, UndefinedBehavior};

pub const NAMESPACE: &str = "aether-system";
/// The sidecar image `sidecar-image` builds; never `latest`, so `IfNotPresent` is safe.
pub const FETCHER_IMAGE: &str = concat!("docker.io/aether/fetcher:", env!("CARGO_PKG_VERSION"));

const TEMPLATES: &[(&str, &str)] = &[
    (
        "aether-control",
        include_str!("../../manifests/aether-control.yaml.j2"),
    ),
    (
        "namespace",
        include_str!("../../manifests/namespace.yaml.j2"),
    ),
    (
        "store-secret",
        include_str!("../../manifests/store-secret.yaml.j2"),
    ),
    (
        "release-configmap",
        include_str!("../../manifests/release-configmap.yaml.j2"),
    ),
    (
        "fetcher-rbac",
        include_str!("../../manifests/fetcher-rbac.yaml.j2"),
    ),
    (
        "deployment",
        include_str!("../../manifests/deployment.yaml.j2"),
    ),
    ("service", include_str!("../../manifests/service.yaml.j2")),
    ("minio", include_str!("../../manifests/minio.yaml.j2")),
    (
        "developer-rbac",
        include_str!("../../manifests/developer-rbac.yaml.j2"),
    ),
    ("postgres", include_str!("../../manifests/postgres.yaml.j2")),
    (
        "aether-store",
        include_str!("../../manifests/aether-store.yaml.j2"),
    ),
];

pub const MINIO_IMAGE: &str = "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z";
pub const POSTGRES_IMAGE: &str = "docker.io/library/postgres:16.4-alpine";
/// The store's NodePort, whichever store bootstrap deploys (only one at a time).
pub const STORE_NODE_PORT: u16 = 30900;
pub const MINIO_NODE_PORT: u16 = STORE_NODE_PORT;
pub const POSTGRES_NODE_PORT: u16 = 30432;
/// MicroK8s' hostpath-storage addon.
pub const STORAGE_CLASS: &str = "microk8s-hostpath";

/// Values of the platform services `bootstrap` deploys.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlatformValues {
    pub ns: String,
    /// `None`: no StorageClass, the data lives in the pods (emptyDir).
    pub storage_class: Option<String>,
    pub store_image: String,
    pub store_node_port: u16,
    pub minio_image: String,
    pub minio_node_port: u16,
    pub access_key: String,
    pub secret_key: String,
    /// The read-only user the apps' pods get ([`minio_reader`]).
    pub read_access_key: String,
    pub read_secret_key: String,
    pub reader_job: String,
    pub reader_policy: String,
    pub postgres_image: String,
    pub postgres_node_port: u16,
    pub db_user: String,
    pub db_password: String,
    pub db_name: String,
    pub cluster_database_url: String,
    pub control_image: String,
    pub control_node_port: u16,
    pub control_admin_token: String,
    /// The store as the control plane signs for it: pods' endpoint, and the key it signs with.
    pub control_store: StoreValues,
    /// The store derives per-app read keys (ours): URLs are signed with those.
    pub control_derive_read_keys: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreValues {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// PEM of the private CA of an `https://` store, mounted into the fetcher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AppValues {
    /// `ns`, not `namespace`: that name is a minijinja builtin and would never be "missing".
    pub ns: String,
    pub app: String,
    pub replicas: u32,
    pub fetcher_image: String,
    pub node_image: String,
    pub store: StoreValues,
    /// The app's own store Secret ([`store_secret_name`]).
    pub store_secret: String,
    /// The release ConfigMap's data.
    pub release: BTreeMap<String, String>,
    /// The fetcher's cap on what an artifact expands to ([`Runtime::max_expanded`]).
    pub max_expanded: u64,
    /// The work volume's `sizeLimit` in MiB ([`Runtime::volume_mib`]).
    pub volume_mib: u64,
    /// The minisign public key the fetcher requires signatures from (`AETHER_VERIFY_KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_key: Option<String>,
    /// The control plane as pods reach it: then they get read URLs from it with their
    /// ServiceAccount token, and no store Secret at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_url: Option<String>,
}

/// Where the fetcher finds its control-plane token (a projected ServiceAccount token for the
/// control plane's audience, apart from the API server's).
pub const CONTROL_TOKEN_DIR: &str = "/var/run/secrets/aether";

/// Every name the templates share with the fetcher and the xtask, from the contract crate: a
/// template never spells one itself (the `tidy` test checks).
fn contract() -> serde_json::Value {
    use aether_artifact::store::{
        ENV_ACCESS_KEY, ENV_BUCKET, ENV_CA_FILE, ENV_ENDPOINT, ENV_REGION, ENV_SECRET_KEY,
    };
    use aether_artifact::{keys, release, volume, FetcherEnv as E};
    use aether_store::StoreEnv as S;
    let root = E::DEFAULT_ROOT;
    serde_json::json!({
        "keys": {"app": keys::APP},
        "release_keys": release::KEYS,
        "fetcher_env": {
            "root": E::ROOT, "app": E::APP, "http_bind": E::HTTP_BIND, "public_key": E::PUBLIC_KEY,
            "namespace": E::NAMESPACE,
            "require_signatures": E::REQUIRE_SIGNATURES, "max_bytes": E::MAX_BYTES,
        },
        "run_env": {
            "listen": E::RUN_LISTEN, "watch": E::RUN_WATCH, "status_file": E::RUN_STATUS_FILE,
            "entry_from": E::RUN_ENTRY_FROM,
        },
        "store_env": {
            "endpoint": ENV_ENDPOINT, "region": ENV_REGION, "bucket": ENV_BUCKET,
            "access_key": ENV_ACCESS_KEY, "secret_key": ENV_SECRET_KEY, "ca_file": ENV_CA_FILE,
        },
        "store_server": {
            "dir": S::DIR, "listen": S::LISTEN, "access_key": S::ACCESS_KEY,
            "secret_key": S::SECRET_KEY, "port": S::PORT, "data": S::DATA_IN_IMAGE,
        },
        "control": {
            "admin_token": aether_artifact::control::ENV_ADMIN_TOKEN,
            "database_url": aether_artifact::control::ControlEnv::DATABASE_URL,
            "listen": aether_artifact::control::ControlEnv::LISTEN,
            "port": aether_artifact::control::PORT,
            "audience": aether_artifact::control::AUDIENCE,
            "url_env": aether_artifact::control::ENV_URL,
            "token_file_env": aether_artifact::control::ENV_TOKEN_FILE,
            "token_dir": CONTROL_TOKEN_DIR,
        },
        "store_ca": {
            "configmap": E::STORE_CA_CONFIGMAP, "item": E::STORE_CA_ITEM, "dir": E::STORE_CA_DIR,
        },
        "paths": {
            "root": root,
            "annotations_dir": E::DEFAULT_ANNOTATIONS_DIR,
            "annotations_item": E::ANNOTATIONS_ITEM,
            "release_dir": E::DEFAULT_RELEASE_DIR,
            "runner": format!("{root}/{}", volume::RUNNER),
            "reload_dir": format!("{root}/{}", volume::RELOAD_DIR),
            "current": volume::CURRENT,
            "run_dir": E::DEFAULT_RUN_DIR,
            "run_status": E::DEFAULT_RUN_STATUS,
            "app_ready": E::APP_READY_PATH,
        },
    })
}

fn env() -> Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter("q", quote);
    env.add_global(
        "contract",
        minijinja::Value::from(minijinja::value::Serde(contract())),
    );
    env.add_function("release_configmap", |app: String| {
        aether_artifact::release::configmap_name(&app)
    });
    env.add_function("fetcher_account", |app: String| fetcher_account(&app));
    for (name, src) in TEMPLATES {
        env.add_template(name, src)
            .with_context(|| format!("template manifests/{name}.yaml.j2"))?;
    }
    Ok(env)
}

/// `{{ x | q }}`: `x` as a JSON string or number, which YAML reads as the same scalar. Unlike
/// the builtin `tojson`, an undefined value is an error, not `null`.
fn quote(v: minijinja::Value) -> Result<String, minijinja::Error> {
    if v.is_undefined() || v.is_none() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            "a manifest value is undefined",
        ));
    }
    serde_json::to_string(&v)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string()))
}

/// Renders one template.
pub fn render(name: &str, values: &impl serde::Serialize) -> Result<String> {
    let env = env()?;
    let t = env
        .get_template(name)
        .with_context(|| format!("no template {name}"))?;
    let mut out = t
        .render(minijinja::Value::from(minijinja::value::Serde(values)))
        .with_context(|| format!("rendering manifests/{name}.yaml.j2"))?;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// The Job that creates MinIO's read-only user (named after its inputs, so new credentials make
/// a new Job) and that user's policy: GET under `artifacts/` of `bucket`, nothing else.
pub fn minio_reader(bucket: &str, user: &str, secret: &str) -> (String, String) {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(format!("{bucket}\0{user}\0{secret}").as_bytes());
    let job = format!(
        "minio-reader-{:02x}{:02x}{:02x}{:02x}",
        h[0], h[1], h[2], h[3]
    );
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [format!("arn:aws:s3:::{bucket}/{}*", aether_artifact::KEY_PREFIX)],
        }],
    });
    (job, policy.to_string())
}

/// The ServiceAccount (and Role, RoleBinding) of an app's fetchers: a watch on its release
/// ConfigMap and nothing more.
pub fn fetcher_account(app: &str) -> String {
    format!("{app}-fetcher")
}

/// The Secret holding an app's read-only store key: one per app, since each app's key differs.
pub fn store_secret_name(app: &str) -> String {
    format!("{app}-store")
}

/// Every object of an app, in apply order, as one multi-document YAML stream; the release
/// ConfigMap only `with_release`.
pub fn render_app(v: &AppValues, with_release: bool) -> Result<String> {
    render_app_parts(v, with_release, true)
}

/// As [`render_app`], without the Namespace when `with_namespace` is false (it exists, and a
/// developer bound to a namespaced Role could not apply a cluster-scoped object).
pub fn render_app_parts(v: &AppValues, with_release: bool, with_namespace: bool) -> Result<String> {
    let mut out = String::new();
    for name in [
        "namespace",
        "store-secret",
        "release-configmap",
        "fetcher-rbac",
        "deployment",
        "service",
    ] {
        if (name == "release-configmap" && !with_release)
            || (name == "namespace" && !with_namespace)
        {
            continue;
        }
        out.push_str("---\n");
        out.push_str(&render(name, v)?);
    }
    Ok(out)
}

/// The Node.js an app needs: its major (`engines.node`), and glibc when it has native addons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtime {
    pub node_major: u32,
    pub glibc: bool,
    /// What the release expands to: its app layer's content and its dependency layer's.
    pub content_bytes: u64,
}

impl Default for Runtime {
    fn default() -> Runtime {
        Runtime {
            node_major: aether_artifact::app::DEFAULT_NODE_MAJOR,
            glibc: false,
            content_bytes: 0,
        }
    }
}

/// The pod's volume budget. A pod unpacks an artifact before its digest is known good (it
/// streams), so the fetcher's expanded-bytes cap and the work volume's `sizeLimit` bound what a
/// bad artifact can fill: the cap at 4× the deployed release (at least 512 MiB: room to grow
/// between deploys; a release past it is refused and the old one keeps serving), the volume at
/// 8× the cap's base (at least 2 GiB: kept releases, those in their GC grace, a shared
/// dependency layer or two). A `sizeLimit` reserves nothing; it evicts a pod that exceeds it.
pub const MIN_EXPANDED: u64 = 512 << 20;
pub const MIN_VOLUME: u64 = 2 << 30;
pub const MAX_EXPANDED: u64 = 4 << 30;

impl Runtime {
    /// The fetcher's cap on what one artifact expands to, in bytes.
    pub fn max_expanded(&self) -> u64 {
        self.content_bytes
            .saturating_mul(4)
            .clamp(MIN_EXPANDED, MAX_EXPANDED)
    }

    /// The work volume's `sizeLimit`, in MiB.
    pub fn volume_mib(&self) -> u64 {
        self.content_bytes
            .saturating_mul(8)
            .clamp(MIN_VOLUME, 8 * MAX_EXPANDED)
            >> 20
    }

    /// The stock node image: Alpine (small), or Debian's slim image when native addons need
    /// glibc (addons built on a glibc host do not load against musl).
    pub fn node_image(&self) -> String {
        let flavour = if self.glibc {
            "bookworm-slim"
        } else {
            "alpine"
        };
        format!("docker.io/library/node:{}-{flavour}", self.node_major)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_variable_is_an_error() {
        let e = render("namespace", &serde_json::json!({})).unwrap_err();
        assert!(format!("{e:#}").contains("undefined"), "{e:#}");
        let e = render("deployment", &serde_json::json!({"app": "x", "ns": "n"})).unwrap_err();
        assert!(format!("{e:#}").contains("undefined"), "{e:#}");
    }

    #[test]
    fn the_volume_budget_follows_the_release_within_bounds() {
        let r = |content_bytes| Runtime {
            content_bytes,
            ..Runtime::default()
        };
        assert_eq!(
            (r(0).max_expanded(), r(0).volume_mib()),
            (MIN_EXPANDED, 2048)
        );
        assert_eq!(r(300 << 20).max_expanded(), 1200 << 20);
        assert_eq!(r(300 << 20).volume_mib(), 2400);
        assert_eq!(r(10 << 30).max_expanded(), MAX_EXPANDED);
        assert_eq!(r(u64::MAX).volume_mib(), 32 << 10);
    }

    #[test]
    fn values_are_quoted() {
        let y = render("namespace", &serde_json::json!({"ns": "a: b\n- c"})).unwrap();
        assert!(y.contains(r#"name: "a: b\n- c""#), "{y}");
    }
}

/// Values for a sample render.
#[cfg(test)]
pub fn example_values(app: &str, digest: &str) -> AppValues {
    AppValues {
        ns: NAMESPACE.into(),
        app: app.into(),
        replicas: 1,
        fetcher_image: FETCHER_IMAGE.into(),
        node_image: Runtime::default().node_image(),
        max_expanded: Runtime::default().max_expanded(),
        volume_mib: Runtime::default().volume_mib(),
        store_secret: store_secret_name("demo"),
        store: StoreValues {
            endpoint: "http://minio.aether-system.svc.cluster.local:9000".into(),
            region: "us-east-1".into(),
            bucket: "aether-artifacts".into(),
            access_key: "REPLACE_ME".into(),
            secret_key: "REPLACE_ME".into(),
            ca_pem: None,
        },
        release: [
            ("digest".to_string(), digest.to_string()),
            ("generation".to_string(), "1".to_string()),
            ("history".to_string(), String::new()),
            ("activate-at".to_string(), String::new()),
        ]
        .into_iter()
        .collect(),
        verify_key: None,
        control_url: None,
    }
}

#[cfg(test)]
mod control_plane;
#[cfg(test)]
mod validate;
