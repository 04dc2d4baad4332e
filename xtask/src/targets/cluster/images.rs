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
    if let Some(i) = std::env::var("AETHER_FETCHER_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
    {
        return Ok(i);
    }
    let archive = crate::fetcher_image::image_archive();
    if archive.exists() {
        return crate::fetcher_image::reference_in(&archive);
    }
    Ok(manifests::FETCHER_IMAGE.into())
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
    /// Makes sure every node can run the fetcher image: MicroK8s imports the archive itself;
    /// any other cluster runs the user's import command (`--image-import`).
    pub(super) fn ensure_image(&self, image: &str, import: Option<&str>) -> Result<()> {
        let archive = crate::fetcher_image::image_archive();
        let present = if self.kube.flavor == Flavor::Microk8s {
            self.kube.images()?.iter().any(|i| i == image)
        } else {
            let nodes = self.kube.nodes()?;
            !nodes.is_empty()
                && nodes.iter().all(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.images.as_ref())
                        .is_some_and(|imgs| {
                            imgs.iter()
                                .any(|i| i.names.iter().flatten().any(|x| x == image))
                        })
                })
        };
        if present {
            return Ok(());
        }
        if std::env::var("AETHER_FETCHER_IMAGE").is_ok_and(|s| !s.is_empty()) {
            // Pushed to a registry by the user: the kubelet pulls it.
            return Ok(());
        }
        if !archive.exists() {
            bail!(
                "the cluster lacks {image} and {} does not exist: run `cargo xtask sidecar-image` first",
                archive.display()
            );
        }
        if self.kube.flavor == Flavor::Microk8s {
            eprintln!("importing {image} into MicroK8s");
            return self.kube.import_image(&archive);
        }
        let Some(template) = import else {
            bail!(
                "no node of the cluster has {image}: pass --image-import '<command> {{archive}}' \
                 (AETHER_IMAGE_IMPORT), e.g. `kind load image-archive {{archive}}`, \
                 `minikube image load {{archive}}` or `../shared/k8s-local/import-image {{archive}}`; \
                 or push the image to a registry your cluster pulls from and set AETHER_FETCHER_IMAGE"
            );
        };
        let argv = import_command(template, &archive)?;
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
