//! What `bootstrap`, `doctor` and `uninstall` ask of a cluster beyond an app's objects: its
//! storage classes, whether it resolves Service names, the platform's objects. Through kubectl
//! (a handful of calls per run; no proxy needed).

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::storage::v1::StorageClass;

use super::{Kube, List};

const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

impl Kube<'_> {
    /// The cluster's default StorageClass (`None`: it has none, volumes would never bind).
    pub fn default_storage_class(&self) -> Result<Option<String>> {
        let out = self.run(
            self.kubectl().args(["get", "storageclass", "-o", "json"]),
            "listing storage classes",
            None,
        )?;
        let list: List<StorageClass> =
            serde_json::from_str(&out).context("parsing the storage classes")?;
        Ok(default_class(&list.items))
    }

    /// Whether pods resolve Service names: the cluster runs a DNS add-on (its Service is
    /// `kube-dns` in `kube-system` on kubeadm, kind, k3s, MicroK8s and the managed clouds).
    pub fn resolves_services(&self) -> Result<bool> {
        let c = self.kubectl().args([
            "get",
            "service",
            "kube-dns",
            "--namespace",
            "kube-system",
            "-o",
            "json",
        ]);
        Ok(self
            .get_with::<serde_json::Value>(c, "service/kube-dns in kube-system")?
            .is_some())
    }

    /// A Service's cluster IP, once it has one.
    pub fn cluster_ip(&self, service: &str) -> Result<Option<String>> {
        Ok(self
            .get::<Service>("service", service)?
            .and_then(|s| s.spec?.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None"))
    }

    /// Deletes the named objects (`kind/name`) that exist; says nothing of the others.
    pub fn delete(&self, objects: &[String]) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        self.run(
            self.kubectl()
                .arg("delete")
                .args(objects)
                .args(["--ignore-not-found", "--wait=true"]),
            "deleting the platform's objects",
            None,
        )
        .map(drop)
    }

    /// Names (`kind/name`) of objects of `kinds` in the namespace, for what is left in it.
    pub fn names(&self, kinds: &str) -> Result<Vec<String>> {
        Ok(self
            .run(
                self.kubectl().args(["get", kinds, "-o", "name"]),
                "listing the namespace's objects",
                None,
            )?
            .lines()
            .map(str::to_string)
            .collect())
    }

    pub fn delete_namespace(&self) -> Result<()> {
        let ns = self.namespace.clone();
        self.run(
            self.kubectl()
                .args(["delete", "namespace", &ns, "--wait=true"]),
            "deleting the namespace",
            None,
        )
        .map(drop)
    }
}

fn default_class(classes: &[StorageClass]) -> Option<String> {
    classes
        .iter()
        .find(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
        })
        .and_then(|c| c.metadata.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_class_is_the_annotated_one() {
        let classes: List<StorageClass> = serde_json::from_value(serde_json::json!({"items": [
            {"metadata": {"name": "slow"}, "provisioner": "x"},
            {"metadata": {"name": "fast", "annotations": {DEFAULT_CLASS: "true"}}, "provisioner": "y"},
        ]}))
        .unwrap();
        assert_eq!(default_class(&classes.items).as_deref(), Some("fast"));
        assert_eq!(default_class(&classes.items[..1]), None);
    }
}
