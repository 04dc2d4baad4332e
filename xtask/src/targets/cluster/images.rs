//! The fetcher image on every node: the built archive's reference, MicroK8s' own import, or the
//! user's import command for any other cluster.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::kube::Flavor;
use crate::manifests::{self};

use super::*;

/// The fetcher image the pods run: `AETHER_FETCHER_IMAGE` (one pushed to a registry), else
/// the content-tagged name inside the archive `sidecar-image` wrote, else the version tag.
pub fn fetcher_image() -> Result<String> {
    image_named(
        "AETHER_FETCHER_IMAGE",
        &crate::images::fetcher::archive(),
        manifests::FETCHER_IMAGE,
    )
}

/// The store image bootstrap deploys: `AETHER_STORE_IMAGE`, else the name inside the archive
/// `image store` wrote, else the repository alone (the plan names it before it is built).
pub fn store_image() -> Result<String> {
    image_named(
        "AETHER_STORE_IMAGE",
        &crate::images::store_server::archive(),
        crate::images::store_server::NAME,
    )
}

/// The control plane image bootstrap deploys, as [`store_image`] finds the store's.
pub fn control_image() -> Result<String> {
    image_named(
        "AETHER_CONTROL_IMAGE",
        &crate::images::control::archive(),
        crate::images::control::NAME,
    )
}

fn image_named(registry_env: &str, archive: &Path, default: &str) -> Result<String> {
    if let Some(i) = std::env::var(registry_env).ok().filter(|s| !s.is_empty()) {
        return Ok(i);
    }
    if archive.exists() {
        return crate::images::reference_in(archive);
    }
    Ok(default.into())
}

/// `--image-import` split into words (no shell), `{archive}` replaced by the archive's path.
pub fn import_command(template: &str, archive: &Path) -> Result<Vec<String>> {
    let words = shlex::split(template).with_context(|| {
        format!("--image-import {template:?} is not a valid command line (unbalanced quotes?)")
    })?;
    if words.is_empty() || !template.contains("{archive}") {
        bail!("--image-import must be a command with {{archive}} in it, e.g. 'kind load image-archive {{archive}}'");
    }
    Ok(words
        .into_iter()
        .map(|w| w.replace("{archive}", &archive.display().to_string()))
        .collect())
}

impl Cluster<'_> {
    /// Whether every node holds `image` (MicroK8s: its containerd).
    pub fn has_image(&self, image: &str) -> Result<bool> {
        if self.kube.flavor == Flavor::Microk8s {
            return Ok(self.kube.images()?.iter().any(|i| i == image));
        }
        let nodes = self.kube.nodes()?;
        Ok(!nodes.is_empty()
            && nodes.iter().all(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.images.as_ref())
                    .is_some_and(|imgs| {
                        imgs.iter()
                            .any(|i| i.names.iter().flatten().any(|x| x == image))
                    })
            }))
    }

    /// Makes sure every node can run `image` from `archive`: MicroK8s imports it itself (on a
    /// single node only: `ctr image import` reaches no other); any other cluster runs the user's
    /// import command. An image named by `registry_env` is pulled by the kubelet instead.
    pub fn ensure_image(
        &self,
        image: &str,
        archive: &Path,
        registry_env: &str,
        import: Option<&str>,
    ) -> Result<()> {
        if self.has_image(image)? {
            return Ok(());
        }
        if std::env::var(registry_env).is_ok_and(|s| !s.is_empty()) {
            return Ok(());
        }
        if !archive.exists() {
            bail!(
                "the cluster lacks {image} and {} does not exist: run `cargo xtask image {}` first",
                archive.display(),
                if registry_env == "AETHER_FETCHER_IMAGE" {
                    "fetcher"
                } else {
                    "store"
                }
            );
        }
        if self.kube.flavor == Flavor::Microk8s {
            let nodes = self.kube.nodes()?.len();
            if nodes > 1 {
                bail!(
                    "this MicroK8s has {nodes} nodes and `microk8s ctr image import` loads {image}                      into this one only, so pods elsewhere could not start: push it to a registry                      the nodes pull from and set {registry_env}, or run `microk8s ctr image import                      {}` on every node first",
                    archive.display()
                );
            }
            eprintln!("importing {image} into MicroK8s");
            return self.kube.import_image(archive);
        }
        let Some(template) = import else {
            bail!(
                "no node of the cluster has {image}: pass --image-import '<command> {{archive}}' \
                 (AETHER_IMAGE_IMPORT), e.g. `kind load image-archive {{archive}}`, \
                 `minikube image load {{archive}}` or `../shared/k8s-local/import-image {{archive}}`; \
                 or push the image to a registry your cluster pulls from and set {registry_env}"
            );
        };
        let argv = import_command(template, archive)?;
        eprintln!("importing {image}: {}", argv.join(" "));
        let (prog, args) = argv
            .split_first()
            .expect("import_command returns a program");
        let out = std::process::Command::new(prog)
            .args(args)
            .output()
            .with_context(|| {
                format!("running the image import command `{prog}`: is it installed?")
            })?;
        if !out.status.success() {
            bail!(
                "the image import command failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}
