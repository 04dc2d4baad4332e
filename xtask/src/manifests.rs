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
];

pub const MINIO_IMAGE: &str = "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z";
pub const POSTGRES_IMAGE: &str = "docker.io/library/postgres:16.4-alpine";
pub const MINIO_NODE_PORT: u16 = 30900;
pub const POSTGRES_NODE_PORT: u16 = 30432;
pub const STORAGE_CLASS: &str = "microk8s-hostpath";

/// Values of the platform services `bootstrap` deploys.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlatformValues {
    pub ns: String,
    pub storage_class: String,
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
}

/// Every name the templates share with the fetcher and the xtask, from the contract crate: a
/// template never spells one itself (the `tidy` test checks).
fn contract() -> serde_json::Value {
    use aether_artifact::store::{
        ENV_ACCESS_KEY, ENV_BUCKET, ENV_CA_FILE, ENV_ENDPOINT, ENV_REGION, ENV_SECRET_KEY,
    };
    use aether_artifact::{keys, release, volume, FetcherEnv as E};
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
    }
}

#[cfg(test)]
mod validate {
    //! Each rendered object is parsed back into the Kubernetes types; a field the types do not
    //! know (a typo, a wrong level) fails the test instead of being silently dropped.
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{
        ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount,
    };
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

    // Parsing into the type is the check; not every test reads every object back.
    #[allow(dead_code)]
    pub enum Obj {
        Namespace(Namespace),
        Secret(Secret),
        ConfigMap(ConfigMap),
        Deployment(Box<Deployment>),
        Service(Service),
        ServiceAccount(ServiceAccount),
        Role(Role),
        RoleBinding(RoleBinding),
    }

    fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value, unknown: &mut Vec<String>) -> T {
        serde_ignored::deserialize(v, |path| unknown.push(path.to_string()))
            .expect("object matches its Kubernetes type")
    }

    /// Parses a multi-document YAML stream; returns the objects and every unknown field path.
    pub fn parse(yaml: &str) -> (Vec<Obj>, Vec<String>) {
        let mut objs = Vec::new();
        let mut unknown = Vec::new();
        for doc in serde_norway::Deserializer::from_str(yaml) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            if v.is_null() {
                continue;
            }
            let kind = v["kind"]
                .as_str()
                .expect("every object has a kind")
                .to_string();
            objs.push(match kind.as_str() {
                "Namespace" => Obj::Namespace(typed(v, &mut unknown)),
                "Secret" => Obj::Secret(typed(v, &mut unknown)),
                "ConfigMap" => Obj::ConfigMap(typed(v, &mut unknown)),
                "Deployment" => Obj::Deployment(Box::new(typed(v, &mut unknown))),
                "Service" => Obj::Service(typed(v, &mut unknown)),
                "ServiceAccount" => Obj::ServiceAccount(typed(v, &mut unknown)),
                "Role" => Obj::Role(typed(v, &mut unknown)),
                "RoleBinding" => Obj::RoleBinding(typed(v, &mut unknown)),
                other => panic!("unexpected kind {other}"),
            });
        }
        (objs, unknown)
    }

    fn restricted(c: &Container) {
        let sc = c
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no securityContext", c.name));
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()]),
            "{}",
            c.name
        );
        assert!(sc.privileged.is_none() || sc.privileged == Some(false));
        let r = c
            .resources
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no resources", c.name));
        assert!(r.requests.is_some() && r.limits.is_some(), "{}", c.name);
    }

    pub fn check_pod_spec(spec: &PodSpec) {
        let psc = spec.security_context.as_ref().expect("pod securityContext");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert!(psc.run_as_user.is_some_and(|u| u != 0));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        assert!(spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none());
        for v in spec.volumes.iter().flatten() {
            assert!(v.host_path.is_none(), "hostPath volume {}", v.name);
        }
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
        {
            restricted(c);
        }
    }

    fn app_yaml() -> String {
        render_app(&example_values("demo", &"ab".repeat(32)), true).unwrap()
    }

    #[test]
    fn every_object_is_a_valid_kubernetes_object() {
        let (objs, unknown) = parse(&app_yaml());
        assert!(unknown.is_empty(), "unknown fields: {unknown:?}");
        assert_eq!(objs.len(), 8);
        // The fetcher's Role: a watch on the app's release ConfigMap and nothing else.
        let rules: Vec<_> = objs
            .iter()
            .filter_map(|o| match o {
                Obj::Role(r) => r.rules.clone(),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["configmaps".to_string()][..])
        );
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["demo-release".to_string()][..])
        );
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    }

    #[test]
    fn a_misspelt_field_is_caught() {
        let bad = app_yaml().replacen("readOnlyRootFilesystem", "readOnlyRootFilesytem", 1);
        let (_, unknown) = parse(&bad);
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert!(unknown[0].contains("readOnlyRootFilesytem"), "{unknown:?}");
    }

    #[test]
    fn deployment_meets_the_design() {
        let (objs, _) = parse(&app_yaml());
        let d = objs
            .iter()
            .find_map(|o| match o {
                Obj::Deployment(d) => Some(d),
                _ => None,
            })
            .unwrap();
        let tmpl = &d.spec.as_ref().unwrap().template;
        let spec = tmpl.spec.as_ref().unwrap();
        check_pod_spec(spec);
        // The template never carries the wanted version: changing it would be a rollout.
        let ann = tmpl
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap_or_default();
        assert!(
            !ann.contains_key("aether.dev/digest") && !ann.contains_key("aether.dev/generation")
        );
        assert_eq!(ann["aether.dev/app"], "demo");
        // The fetcher is a native sidecar whose startup probe is /readyz.
        let f = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(f.name, "aether-fetcher");
        assert_eq!(f.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            f.startup_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        assert_eq!(f.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let image = f.image.as_deref().unwrap();
        assert!(
            !image.ends_with(":latest") && image.contains(':'),
            "{image}"
        );
        let mounts: Vec<_> = f
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(
            mounts,
            [
                "/work",
                "/etc/podinfo",
                "/etc/aether/release",
                "/run/aether",
                "/var/run/secrets/kubernetes.io/serviceaccount"
            ]
        );
        // The API token reaches the fetcher alone: no automount, no mount in the app.
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert!(spec.containers.iter().all(|c| c
            .volume_mounts
            .iter()
            .flatten()
            .all(|m| m.name != "api-token")));
        // Downward-API annotations and the release ConfigMap as volumes.
        let vols = spec.volumes.as_ref().unwrap();
        let podinfo = vols
            .iter()
            .find(|v| v.name == "podinfo")
            .unwrap()
            .downward_api
            .as_ref()
            .unwrap();
        assert_eq!(
            podinfo.items.as_ref().unwrap()[0]
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.annotations"
        );
        assert_eq!(
            vols.iter()
                .find(|v| v.name == "release")
                .unwrap()
                .config_map
                .as_ref()
                .unwrap()
                .name,
            "demo-release"
        );
        let app = &spec.containers[0];
        let command = app.command.as_ref().unwrap();
        // aether-run from the shared volume is PID 1 (node as PID 1 ignores SIGTERM).
        assert_eq!(
            command[0],
            format!("/work/{}", aether_artifact::volume::RUNNER)
        );
        assert_eq!(command[1..], ["--", "node"]);
        assert_eq!(app.ports.as_ref().unwrap()[0].container_port, 3000);
        // It owns the public port, follows the fetcher's trigger, and reports where the
        // fetcher (which mounts the same volume read-only) reads it.
        use aether_artifact::FetcherEnv as E;
        let env: BTreeMap<_, _> = app
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.clone()))
            .collect();
        assert_eq!(env[E::RUN_LISTEN].as_deref(), Some(":3000"));
        assert_eq!(env[E::RUN_WATCH].as_deref(), Some("/work/.reload"));
        assert_eq!(
            env[E::RUN_STATUS_FILE].as_deref(),
            Some(E::DEFAULT_RUN_STATUS)
        );
        assert!(
            !env.contains_key("PORT"),
            "aether-run gives each process its own PORT"
        );
        let mount = |c: &k8s_openapi::api::core::v1::Container| {
            c.volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == "run")
                .map(|m| (m.mount_path.clone(), m.read_only.unwrap_or(false)))
        };
        assert_eq!(mount(app), Some((E::DEFAULT_RUN_DIR.into(), false)));
        let fetcher = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(mount(fetcher), Some((E::DEFAULT_RUN_DIR.into(), true)));
    }

    /// An `https://` store with a private CA: the CA goes into its own ConfigMap, mounted
    /// read-only into the fetcher, which is told where by the contract's variable.
    #[test]
    fn a_private_store_ca_is_mounted_into_the_fetcher() {
        use aether_artifact::FetcherEnv as E;
        let mut v = example_values("demo", &"ab".repeat(32));
        v.store.ca_pem =
            Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into());
        let (objs, unknown) = parse(&render_app(&v, true).unwrap());
        assert!(unknown.is_empty(), "unknown fields: {unknown:?}");
        let ca = objs
            .iter()
            .find_map(|o| match o {
                Obj::ConfigMap(c) if c.metadata.name.as_deref() == Some(E::STORE_CA_CONFIGMAP) => {
                    Some(c)
                }
                _ => None,
            })
            .expect("the CA ConfigMap");
        assert_eq!(
            ca.data.as_ref().unwrap()[E::STORE_CA_ITEM],
            v.store.ca_pem.clone().unwrap()
        );
        let spec = objs
            .iter()
            .find_map(|o| match o {
                Obj::Deployment(d) => d.spec.as_ref()?.template.spec.clone(),
                _ => None,
            })
            .unwrap();
        check_pod_spec(&spec);
        let fetcher = &spec.init_containers.as_ref().unwrap()[0];
        let env = fetcher.env.as_ref().unwrap();
        let ca_env = env
            .iter()
            .find(|e| e.name == aether_artifact::store::ENV_CA_FILE)
            .expect("AETHER_S3_CA_FILE set");
        assert_eq!(
            ca_env.value.as_deref(),
            Some(format!("{}/{}", E::STORE_CA_DIR, E::STORE_CA_ITEM).as_str())
        );
        let mount = fetcher
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.mount_path == E::STORE_CA_DIR)
            .expect("CA mounted");
        assert_eq!(mount.read_only, Some(true));
        assert!(spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .any(|vol| vol.name == mount.name
                && vol.config_map.as_ref().map(|c| c.name.as_str())
                    == Some(E::STORE_CA_CONFIGMAP)));
        // Without a CA nothing of it is rendered.
        let plain = app_yaml();
        assert!(
            !plain.contains(E::STORE_CA_CONFIGMAP)
                && !plain.contains(aether_artifact::store::ENV_CA_FILE)
        );
    }

    fn platform_yaml() -> String {
        let v = PlatformValues {
            ns: NAMESPACE.into(),
            storage_class: STORAGE_CLASS.into(),
            minio_image: MINIO_IMAGE.into(),
            minio_node_port: MINIO_NODE_PORT,
            access_key: "REPLACE_ME".into(),
            secret_key: "REPLACE_ME".into(),
            read_access_key: "aether-read".into(),
            read_secret_key: "REPLACE_ME".into(),
            reader_job: minio_reader("aether-artifacts", "aether-read", "REPLACE_ME").0,
            reader_policy: minio_reader("aether-artifacts", "aether-read", "REPLACE_ME").1,
            postgres_image: POSTGRES_IMAGE.into(),
            postgres_node_port: POSTGRES_NODE_PORT,
            db_user: "aether".into(),
            db_password: "REPLACE_ME".into(),
            db_name: "aether".into(),
            cluster_database_url:
                "postgres://aether:REPLACE_ME@postgres.aether-system.svc.cluster.local:5432/aether"
                    .into(),
        };
        format!(
            "{}---\n{}",
            render("minio", &v).unwrap(),
            render("postgres", &v).unwrap()
        )
    }

    #[test]
    fn platform_services_are_valid_and_restricted() {
        use k8s_openapi::api::apps::v1::StatefulSet;
        use k8s_openapi::api::core::v1::PersistentVolumeClaim;
        let mut unknown = Vec::new();
        let mut kinds = Vec::new();
        for doc in serde_norway::Deserializer::from_str(&platform_yaml()) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = v["kind"].as_str().unwrap().to_string();
            match kind.as_str() {
                "Secret" => drop(typed::<Secret>(v, &mut unknown)),
                "Job" => {
                    let j: k8s_openapi::api::batch::v1::Job = typed(v, &mut unknown);
                    check_pod_spec(j.spec.unwrap().template.spec.as_ref().unwrap());
                }
                "PersistentVolumeClaim" => {
                    let pvc: PersistentVolumeClaim = typed(v, &mut unknown);
                    assert_eq!(
                        pvc.spec.unwrap().storage_class_name.as_deref(),
                        Some(STORAGE_CLASS)
                    );
                }
                "Deployment" => {
                    let d: Deployment = typed(v, &mut unknown);
                    check_pod_spec(d.spec.unwrap().template.spec.as_ref().unwrap());
                }
                "StatefulSet" => {
                    let s: StatefulSet = typed(v, &mut unknown);
                    let spec = s.spec.unwrap();
                    check_pod_spec(spec.template.spec.as_ref().unwrap());
                    assert_eq!(
                        spec.volume_claim_templates.unwrap()[0]
                            .spec
                            .as_ref()
                            .unwrap()
                            .storage_class_name
                            .as_deref(),
                        Some(STORAGE_CLASS)
                    );
                }
                "Service" => {
                    let s: Service = typed(v, &mut unknown);
                    let port = s.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
                    assert!(
                        [i32::from(MINIO_NODE_PORT), i32::from(POSTGRES_NODE_PORT)].contains(&port)
                    );
                }
                other => panic!("unexpected kind {other}"),
            }
            kinds.push(kind);
        }
        assert!(unknown.is_empty(), "unknown fields: {unknown:?}");
        assert_eq!(
            kinds,
            [
                "Secret",
                "PersistentVolumeClaim",
                "Deployment",
                "Service",
                "Job",
                "Secret",
                "Secret",
                "StatefulSet",
                "Service"
            ]
        );
        insta::assert_snapshot!("platform", platform_yaml());
    }

    #[test]
    fn snapshot_of_the_rendered_app() {
        insta::assert_snapshot!("demo", app_yaml());
    }
}
