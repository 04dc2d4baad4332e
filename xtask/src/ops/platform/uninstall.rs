//! `uninstall`: removes what `bootstrap` put in the namespace (the store, Postgres, their
//! Secrets; their volumes with `--delete-data`), and the namespace itself when bootstrap made
//! it and nothing else is left in it: the namespace ends as bootstrap found it.

use anyhow::Result;
use xshell::Shell;

use crate::config::{Global, ProjectConfig};
use crate::targets::{Kind, TargetArgs};

/// Objects of every store kind and of Postgres (deleting one that is absent is no error).
const OBJECTS: &[&str] = &[
    "deployment/aether-store",
    "service/aether-store",
    "secret/aether-store-owner",
    "deployment/minio",
    "service/minio",
    "secret/aether-minio",
    "statefulset/postgres",
    "service/postgres",
    "secret/aether-postgres",
    "secret/aether-database",
    "deployment/aether-control",
    "service/aether-control",
    "secret/aether-control",
    "serviceaccount/aether-control",
];
const DATA: &[&str] = &[
    "persistentvolumeclaim/aether-store-data",
    "persistentvolumeclaim/minio-data",
    "persistentvolumeclaim/data-postgres-0",
];

pub fn uninstall(sh: &Shell, global: &Global, targs: &TargetArgs, delete_data: bool) -> Result<()> {
    let kind = match targs.target {
        Some(Kind::Local) | None => Kind::Microk8s,
        Some(k) => k,
    };
    let c = targs.open_cluster(sh, global, kind);
    let ns = c.kube.namespace.clone();
    let Some(namespace) = c
        .kube
        .get::<k8s_openapi::api::core::v1::Namespace>("namespace", &ns)?
    else {
        eprintln!("namespace {ns} does not exist: nothing to uninstall");
        return Ok(());
    };
    let mut objects: Vec<String> = OBJECTS.iter().map(|s| s.to_string()).collect();
    objects.extend(
        c.kube
            .names("jobs")?
            .into_iter()
            .filter(|j| j.starts_with("job.batch/minio-reader-")),
    );
    if delete_data {
        objects.extend(DATA.iter().map(|s| s.to_string()));
    }
    objects.push(format!(
        "clusterrolebinding/aether-control-tokenreview-{ns}"
    ));
    c.kube.delete(&objects)?;
    // The ClusterRole is shared by the namespaces that have a control plane: the last one
    // takes it along.
    let others = c
        .kube
        .names("clusterrolebindings")?
        .into_iter()
        .any(|b| b.contains("/aether-control-tokenreview-"));
    if !others {
        c.kube
            .delete(&["clusterrole/aether-control-tokenreview".to_string()])?;
    }
    eprintln!(
        "deleted the store, Postgres and the control plane from {ns}{}",
        if delete_data {
            ", with their data"
        } else {
            " (their volumes stay: --delete-data removes them)"
        }
    );
    if delete_data {
        // The credentials named what is gone; a later bootstrap makes new ones.
        let mut cfg = ProjectConfig::load(&global.state_dir())?;
        cfg.store = Default::default();
        cfg.database_url = None;
        cfg.cluster_store_endpoint = None;
        cfg.control = None;
        cfg.save(&global.state_dir())?;
    }
    let ours = namespace
        .metadata
        .labels
        .unwrap_or_default()
        .get("app.kubernetes.io/managed-by")
        .is_some_and(|v| v == "aether-dev");
    if !ours {
        eprintln!("namespace {ns} kept: bootstrap did not create it");
        return Ok(());
    }
    let left = leftovers(c.kube.names(
        "deployments,statefulsets,services,secrets,configmaps,persistentvolumeclaims,jobs",
    )?);
    if left.is_empty() {
        c.kube.delete_namespace()?;
        eprintln!("deleted namespace {ns} (bootstrap created it, nothing else was in it)");
    } else {
        eprintln!(
            "namespace {ns} kept: it still holds {} (apps: `cargo xtask down <app>`)",
            left.join(", ")
        );
    }
    Ok(())
}

/// What in a namespace is somebody's: controllers publish CA bundles into every namespace by
/// themselves (`kube-root-ca.crt`; OpenShift-derived clusters add `openshift-service-ca.crt`).
fn leftovers(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| !(n.starts_with("configmap/") && n.ends_with(".crt")))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn published_ca_bundles_are_nobodys() {
        let names = [
            "configmap/kube-root-ca.crt",
            "configmap/openshift-service-ca.crt",
            "configmap/demo-release",
            "secret/x",
        ];
        assert_eq!(
            super::leftovers(names.iter().map(|s| s.to_string()).collect()),
            ["configmap/demo-release", "secret/x"]
        );
    }
}
