//! The control plane's manifests and an app's pods beside it: typed, restricted, least
//! privilege, and no store key anywhere near the apps.

use super::validate::{check_pod_spec, platform_values, typed};
use super::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

fn control_yaml() -> String {
    render("aether-control", &platform_values(Some(STORAGE_CLASS))).unwrap()
}

#[test]
fn the_control_plane_is_typed_restricted_and_may_only_review_tokens() {
    let mut unknown = Vec::new();
    let mut kinds = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&control_yaml()) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        let kind = v["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "ServiceAccount" => {
                let sa: ServiceAccount = typed(v, &mut unknown);
                assert_eq!(sa.automount_service_account_token, Some(false));
            }
            "ClusterRole" => {
                let r: ClusterRole = typed(v, &mut unknown);
                let rules = r.rules.unwrap();
                assert_eq!(rules.len(), 1);
                assert_eq!(
                    rules[0].resources.as_deref(),
                    Some(&["tokenreviews".to_string()][..])
                );
                assert_eq!(rules[0].verbs, ["create"]);
            }
            "ClusterRoleBinding" => {
                let b: ClusterRoleBinding = typed(v, &mut unknown);
                let s = &b.subjects.unwrap()[0];
                assert_eq!(
                    (s.name.as_str(), s.namespace.as_deref()),
                    ("aether-control", Some(NAMESPACE))
                );
                assert!(
                    b.metadata.name.unwrap().ends_with(NAMESPACE),
                    "one binding per namespace"
                );
            }
            "Secret" => drop(typed::<Secret>(v, &mut unknown)),
            "Deployment" => {
                let d: Deployment = typed(v, &mut unknown);
                let spec = d.spec.unwrap().template.spec.unwrap();
                check_pod_spec(&spec);
                assert_eq!(spec.automount_service_account_token, Some(false));
                let args = spec.containers[0].args.clone().unwrap();
                assert!(
                    args.contains(&format!("--namespace={NAMESPACE}")),
                    "{args:?}"
                );
                assert!(args.contains(&"--derive-read-keys".to_string()), "{args:?}");
            }
            "Service" => {
                let s: Service = typed(v, &mut unknown);
                let port = s.spec.unwrap().ports.unwrap()[0].node_port;
                assert_eq!(port, Some(i32::from(aether_artifact::control::NODE_PORT)));
            }
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    assert!(unknown.is_empty(), "unknown fields: {unknown:?}");
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Secret",
            "Deployment",
            "Service"
        ]
    );
    insta::assert_snapshot!("control", control_yaml());
}

/// With a control plane an app's fetcher holds a token only the control plane accepts, and no
/// store key: no store Secret, no envFrom; the app container gets neither.
#[test]
fn beside_a_control_plane_pods_hold_no_store_key() {
    let mut v = example_values("demo", &"ab".repeat(32));
    v.control_url = Some("http://aether-control.aether-system.svc.cluster.local:8090".into());
    let yaml = render_app(&v, true).unwrap();
    let (objs, unknown) = super::validate::parse(&yaml);
    assert!(unknown.is_empty(), "unknown fields: {unknown:?}");
    assert!(
        !objs
            .iter()
            .any(|o| matches!(o, super::validate::Obj::Secret(_))),
        "{yaml}"
    );
    let d = objs
        .iter()
        .find_map(|o| match o {
            super::validate::Obj::Deployment(d) => Some((**d).clone()),
            _ => None,
        })
        .unwrap();
    let spec = d.spec.unwrap().template.spec.unwrap();
    check_pod_spec(&spec);
    let fetcher = &spec.init_containers.as_ref().unwrap()[0];
    assert!(fetcher.env_from.is_none());
    let env: Vec<_> = fetcher
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(env.contains(&aether_artifact::control::ENV_URL), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("AETHER_S3_")), "{env:?}");
    let vol = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "control-token")
        .unwrap();
    let src = &vol.projected.unwrap().sources.unwrap()[0];
    let token = src.service_account_token.as_ref().unwrap();
    assert_eq!(
        token.audience.as_deref(),
        Some(aether_artifact::control::AUDIENCE)
    );
    let mounted = |c: &k8s_openapi::api::core::v1::Container| {
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "control-token")
    };
    assert!(mounted(fetcher));
    assert!(
        !mounted(&spec.containers[0]),
        "the app container gets no token"
    );
}
