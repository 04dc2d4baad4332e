//! What the cluster's JSON means for an app: its Deployment, ReplicaSets, pods and release
//! ConfigMap, which pods are live, and a pod described for people.

use anyhow::Result;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};

/// Everything of one app that the commands read, listed side by side through the API proxy.
#[derive(Debug, Default)]
pub struct AppObjects {
    pub deployment: Option<Deployment>,
    pub replicasets: Vec<ReplicaSet>,
    pub pods: Vec<Pod>,
    pub release: Option<ConfigMap>,
}

impl AppObjects {
    /// Sorts objects, each with its `kind`, into the app's parts.
    pub fn from_items(items: Vec<serde_json::Value>, release_name: &str) -> Result<AppObjects> {
        let mut o = AppObjects::default();
        for item in items {
            let kind = item["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "Deployment" => o.deployment = Some(serde_json::from_value(item)?),
                "ReplicaSet" => o.replicasets.push(serde_json::from_value(item)?),
                "Pod" => o.pods.push(serde_json::from_value(item)?),
                "ConfigMap" if item["metadata"]["name"] == release_name => {
                    o.release = Some(serde_json::from_value(item)?)
                }
                _ => {}
            }
        }
        Ok(o)
    }

    /// ReplicaSets owned by the current Deployment, newest revision first.
    fn owned_replicasets(&self) -> Vec<&ReplicaSet> {
        let Some(uid) = self
            .deployment
            .as_ref()
            .and_then(|d| d.metadata.uid.as_deref())
        else {
            return Vec::new();
        };
        let mut rs: Vec<&ReplicaSet> = self
            .replicasets
            .iter()
            .filter(|r| owned_by(&r.metadata, uid))
            .collect();
        rs.sort_by_key(|r| std::cmp::Reverse(revision(r)));
        rs
    }

    /// Pods of the current Deployment (through any of its ReplicaSets) that are not being
    /// deleted. A pod left over from an earlier Deployment of the same name (`down` then
    /// `deploy-sample`) carries the same labels but belongs to none of these.
    /// Whether the Deployment's rollout is complete, as `kubectl rollout status` decides it:
    /// its controller saw the current spec, and every desired replica is updated and
    /// available, with no old one left.
    pub fn rolled_out(&self) -> bool {
        let Some(d) = &self.deployment else {
            return false;
        };
        let (Some(spec), Some(st)) = (&d.spec, &d.status) else {
            return false;
        };
        let want = spec.replicas.unwrap_or(1);
        st.observed_generation >= d.metadata.generation
            && st.updated_replicas.unwrap_or(0) == want
            && st.replicas.unwrap_or(0) == want
            && st.available_replicas.unwrap_or(0) == want
    }

    pub fn live_pods(&self) -> Vec<&Pod> {
        let owners: Vec<&str> = self
            .owned_replicasets()
            .iter()
            .filter_map(|r| r.metadata.uid.as_deref())
            .collect();
        self.pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| owners.iter().any(|uid| owned_by(&p.metadata, uid)))
            .collect()
    }
}

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.uid == uid)
}

fn revision(rs: &ReplicaSet) -> u64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// One line per pod, then one per container: what `kubectl describe` would make you look for.
pub fn describe_pod(p: &Pod) -> String {
    let name = p.metadata.name.as_deref().unwrap_or("?");
    let st = p.status.as_ref();
    let phase = st.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    let mut out = format!("pod {name}: {phase}\n");
    let statuses = st
        .map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for c in statuses {
        let state = c.state.as_ref();
        let desc = if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            format!(
                "waiting: {} {}",
                w.reason.as_deref().unwrap_or(""),
                w.message.as_deref().unwrap_or("")
            )
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            format!(
                "terminated: {} (exit {})",
                t.reason.as_deref().unwrap_or(""),
                t.exit_code
            )
        } else if state.and_then(|s| s.running.as_ref()).is_some() {
            "running".to_string()
        } else {
            "unknown".to_string()
        };
        out.push_str(&format!(
            "  container {}: {} ready={} restarts={}\n",
            c.name,
            desc.trim(),
            c.ready,
            c.restart_count
        ));
    }
    out
}
