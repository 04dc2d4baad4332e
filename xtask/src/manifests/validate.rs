//! Each rendered object is parsed back into the Kubernetes types; a field the types do not
//! know (a typo, a wrong level) fails the test instead of being silently dropped.
#![cfg(test)]

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

pub fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value, unknown: &mut Vec<String>) -> T {
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
    assert!(!ann.contains_key("aether.dev/digest") && !ann.contains_key("aether.dev/generation"));
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
    v.store.ca_pem = Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into());
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
            && vol.config_map.as_ref().map(|c| c.name.as_str()) == Some(E::STORE_CA_CONFIGMAP)));
    // Without a CA nothing of it is rendered.
    let plain = app_yaml();
    assert!(
        !plain.contains(E::STORE_CA_CONFIGMAP)
            && !plain.contains(aether_artifact::store::ENV_CA_FILE)
    );
}

/// The platform's values as the tests render them.
pub fn platform_values(storage_class: Option<&str>) -> PlatformValues {
    PlatformValues {
        ns: NAMESPACE.into(),
        storage_class: storage_class.map(Into::into),
        store_image: "docker.io/aether/store:0.1.0-0123456789ab".into(),
        store_node_port: STORE_NODE_PORT,
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
        control_image: "docker.io/aether/control:0.1.0-0123456789ab".into(),
        control_node_port: aether_artifact::control::NODE_PORT,
        control_admin_token: "REPLACE_ME".into(),
        control_store: StoreValues {
            endpoint: "http://aether-store.aether-system.svc.cluster.local:9000".into(),
            region: "us-east-1".into(),
            bucket: "aether-artifacts".into(),
            access_key: "REPLACE_ME".into(),
            secret_key: "REPLACE_ME".into(),
            ca_pem: None,
        },
        control_derive_read_keys: true,
    }
}

fn platform_yaml(storage_class: Option<&str>) -> String {
    let v = platform_values(storage_class);
    format!(
        "{}---\n{}---\n{}",
        render("aether-store", &v).unwrap(),
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
    for doc in serde_norway::Deserializer::from_str(&platform_yaml(Some(STORAGE_CLASS))) {
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
                assert!([i32::from(STORE_NODE_PORT), i32::from(POSTGRES_NODE_PORT)].contains(&port));
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
    insta::assert_snapshot!("platform", platform_yaml(Some(STORAGE_CLASS)));
}

/// A cluster without a StorageClass: no claim that would never bind; each service keeps its
/// data in an emptyDir named like the claim's volume.
#[test]
fn without_a_storage_class_the_data_lives_in_the_pods() {
    let yaml = platform_yaml(None);
    assert!(!yaml.contains("PersistentVolumeClaim") && !yaml.contains("volumeClaimTemplates"));
    let mut specs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&yaml) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        // Both kinds keep their pod template at the same place.
        if matches!(v["kind"].as_str(), Some("Deployment" | "StatefulSet")) {
            specs.push(
                serde_json::from_value::<k8s_openapi::api::core::v1::PodSpec>(
                    v["spec"]["template"]["spec"].clone(),
                )
                .unwrap(),
            );
        }
    }
    assert_eq!(specs.len(), 3);
    for spec in specs {
        check_pod_spec(&spec);
        let data = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "data")
            .unwrap();
        assert!(data.empty_dir.is_some(), "{data:?}");
    }
}

#[test]
fn snapshot_of_the_rendered_app() {
    insta::assert_snapshot!("demo", app_yaml());
}
