//! The `microk8s` and `kube` targets: every command goes through the typed wrapper in `kube`.
//! A hot reload updates the release ConfigMap and annotates the live pods; it never touches the
//! Deployment, whose template change would be a rollout.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aether_artifact::store::{PartialStore, Store, StoreConfig};
use aether_artifact::{keys, AppName, Digest};
use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::config::Global;
use crate::kube::{release_configmap, Flavor, Kube};
use crate::manifests::{self, AppValues, StoreValues};
use crate::release::Release;
use crate::target::{Target, TargetArgs};

/// Host side of the MinIO that `bootstrap` deploys (its NodePort).
pub const DEFAULT_HOST_ENDPOINT: &str = "http://127.0.0.1:30900";
/// Cluster side of the same MinIO, as pods reach it.
pub const DEFAULT_CLUSTER_ENDPOINT: &str = "http://minio.aether-system.svc.cluster.local:9000";

/// Where `sidecar-image` writes the fetcher's OCI archive.
pub fn image_archive() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("AETHER_FETCHER_IMAGE_ARCHIVE") {
        return p.into();
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ws.join("target"))
        .join("aether-fetcher-image.tar")
}

pub struct Cluster<'a> {
    pub kube: Kube<'a>,
    global: Global,
}

impl<'a> Cluster<'a> {
    pub fn new(sh: &'a Shell, global: &Global, target: &TargetArgs, t: Target) -> Cluster<'a> {
        let flavor = match t {
            Target::Microk8s => Flavor::Microk8s,
            _ => Flavor::Kube {
                context: target.context.clone(),
            },
        };
        Cluster {
            kube: Kube::new(sh, flavor, &target.namespace),
            global: global.clone(),
        }
    }

    /// The store as this machine reaches it.
    pub fn store_config(&self) -> Result<StoreConfig> {
        let defaults = PartialStore {
            endpoint: Some(DEFAULT_HOST_ENDPOINT.into()),
            ..Default::default()
        };
        self.global
            .store_layers()?
            .or(defaults)
            .finish()
            .map_err(anyhow::Error::msg)
    }

    pub fn store(&self) -> Result<Store> {
        Ok(Store::new(self.store_config()?)?)
    }

    fn values(&self, app: &AppName, release: &Release, store: &StoreConfig) -> Result<AppValues> {
        let cluster_endpoint = std::env::var("AETHER_S3_CLUSTER_ENDPOINT")
            .ok()
            .filter(|s| !s.is_empty())
            .or(
                crate::config::ProjectConfig::load(&self.global.state_dir())?
                    .cluster_store_endpoint,
            )
            .unwrap_or_else(|| DEFAULT_CLUSTER_ENDPOINT.into());
        Ok(AppValues {
            ns: self.kube.namespace.clone(),
            app: app.to_string(),
            replicas: 1,
            fetcher_image: manifests::FETCHER_IMAGE.into(),
            node_image: manifests::NODE_IMAGE.into(),
            store: StoreValues {
                endpoint: cluster_endpoint,
                region: store.region.clone(),
                bucket: store.bucket.clone(),
                access_key: store.access_key.clone(),
                secret_key: store.secret_key.expose().to_string(),
            },
            release: release.to_data(),
        })
    }

    /// The release recorded in the app's ConfigMap (empty when the app was never deployed).
    pub fn release(&self, app: &AppName) -> Result<Option<Release>> {
        let Some(cm) = self.kube.configmap(&release_configmap(app.as_str()))? else {
            return Ok(None);
        };
        let data: BTreeMap<String, String> = cm.data.unwrap_or_default();
        Ok(Some(
            Release::from_data(&data).context("reading the release ConfigMap")?,
        ))
    }

    /// Updates the ConfigMap, then annotates every live pod so the kubelet refreshes both
    /// volumes at once. Returns the pods signalled.
    fn publish(&self, app: &AppName, next: &Release) -> Result<Vec<String>> {
        let store = self.store_config()?;
        let cm = manifests::render("release-configmap", &self.values(app, next, &store)?)?;
        self.kube.apply(&cm)?;
        let digest = next.digest.expect("a release names a digest");
        let pairs: BTreeMap<String, String> = [
            (keys::DIGEST.to_string(), digest.to_string()),
            (keys::GENERATION.to_string(), next.generation.to_string()),
        ]
        .into_iter()
        .collect();
        let mut signalled = Vec::new();
        for pod in self.kube.pods(app.as_str())? {
            let name = pod.metadata.name.clone().unwrap_or_default();
            self.kube.annotate(&name, &pairs)?;
            signalled.push(name);
        }
        Ok(signalled)
    }

    pub fn hot_patch(&self, app: &AppName, digest: Digest) -> Result<()> {
        let store = self.store()?;
        crate::upload::require_in_store(&store, app, &digest)?;
        let current = self.release(app)?.with_context(|| format!("{app} is not deployed in namespace {}: run `cargo xtask deploy-sample {app}` first", self.kube.namespace))?;
        let Some(next) = current.next_or_say(app, digest) else {
            return Ok(());
        };
        self.report(app, &next, self.publish(app, &next)?)
    }

    pub fn rollback(&self, app: &AppName, to: Option<Digest>) -> Result<()> {
        let current = self.release(app)?.with_context(|| {
            format!("{app} is not deployed in namespace {}", self.kube.namespace)
        })?;
        let dest = current.rollback_target(to)?;
        crate::upload::require_in_store(&self.store()?, app, &dest)?;
        let next = current.rollback_to(app, dest);
        self.report(app, &next, self.publish(app, &next)?)
    }

    fn report(&self, app: &AppName, next: &Release, pods: Vec<String>) -> Result<()> {
        let digest = next.digest.expect("a release names a digest");
        if pods.is_empty() {
            eprintln!("release {app}: {} generation {}; no live pod to signal (new pods start from the ConfigMap)", digest.short(), next.generation);
        } else {
            eprintln!(
                "signalled {} pod(s) of {app}: {}",
                pods.len(),
                pods.join(", ")
            );
        }
        println!("generation={}", next.generation);
        println!("digest={digest}");
        Ok(())
    }

    pub fn deploy(
        &self,
        app: &AppName,
        dir: &Path,
        timeout: Duration,
        image_archive: &Path,
    ) -> Result<()> {
        let store = self.store()?;
        let up = crate::upload::upload(&store, &self.global, app, dir, 3600, true)?;
        eprintln!("{}", up.summary());
        if self.kube.flavor == Flavor::Microk8s {
            let images = self.kube.images()?;
            if !images.iter().any(|i| i == manifests::FETCHER_IMAGE) {
                if !image_archive.exists() {
                    bail!("the cluster lacks {} and {} does not exist: run `cargo xtask sidecar-image` first", manifests::FETCHER_IMAGE, image_archive.display());
                }
                eprintln!("importing {} into MicroK8s", manifests::FETCHER_IMAGE);
                self.kube.import_image(image_archive)?;
            }
        } else {
            eprintln!("note: the cluster must be able to pull {} (load it into the cluster or push it to a registry it uses)", manifests::FETCHER_IMAGE);
        }
        let current = self.release(app)?.unwrap_or_default();
        let next = current.next(up.digest);
        let release = next.clone().unwrap_or_else(|| current.clone());
        let all = manifests::render_app(&self.values(app, &release, &self.store_config()?)?)?;
        self.kube.apply(&all)?;
        if let Some(next) = &next {
            // Pods of an earlier deploy pick the new release up without a rollout.
            let pods = self.publish(app, next)?;
            if !pods.is_empty() {
                eprintln!("signalled {} running pod(s)", pods.len());
            }
        }
        if let Err(e) = self.kube.wait_ready(app.as_str(), timeout.as_secs()) {
            bail!(
                "{e:#}\n--- diagnosis ---\n{}",
                self.kube.diagnose(app.as_str())
            );
        }
        let port = self
            .kube
            .service(app.as_str())?
            .and_then(|s| s.spec)
            .and_then(|s| s.ports)
            .and_then(|p| p.first().and_then(|p| p.node_port));
        eprintln!("{app} is running {}", up.digest.short());
        if let Some(port) = port {
            println!("url=http://127.0.0.1:{port}/");
        }
        println!("digest={}", up.digest);
        Ok(())
    }

    pub fn status(&self, app: &AppName, json: bool) -> Result<()> {
        let desired = self.release(app)?.unwrap_or_default();
        let mut pods = Vec::new();
        for pod in self.kube.pods(app.as_str())? {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let mut v = self
                .kube
                .fetcher_status(&name)
                .unwrap_or_else(|e| serde_json::json!({ "error": format!("{e:#}") }));
            v["pod"] = serde_json::json!(name);
            pods.push(v);
        }
        crate::hot::print_status(app, "cluster", &desired, &pods, json)
    }

    pub fn logs(&self, app: &AppName, fetcher: bool, follow: bool) -> Result<()> {
        let container = if fetcher { "aether-fetcher" } else { "app" };
        self.kube
            .cmd_logs(app.as_str(), container, follow)
            .run()
            .context("streaming logs")?;
        Ok(())
    }

    pub fn down(&self, app: &AppName) -> Result<()> {
        self.kube.delete_app(app.as_str())
    }

    /// The manifests for review or GitOps. Credentials are placeholders: they never go to stdout.
    pub fn render(&self, app: &AppName, digest: Digest) -> Result<String> {
        let release = Release::default()
            .next(digest)
            .expect("an empty release differs from any digest");
        let layers = self.global.store_layers()?;
        let store = StoreConfig {
            endpoint: DEFAULT_HOST_ENDPOINT.into(),
            region: layers
                .region
                .unwrap_or_else(|| aether_artifact::store::DEFAULT_REGION.into()),
            bucket: layers
                .bucket
                .unwrap_or_else(|| aether_artifact::store::DEFAULT_BUCKET.into()),
            access_key: "REPLACE_ME".into(),
            secret_key: aether_artifact::store::Secret::new("REPLACE_ME"),
        };
        manifests::render_app(&self.values(app, &release, &store)?)
    }

    /// `k8s-start`: MicroK8s ready, addons on, namespace present. Says when nothing changed.
    pub fn start(&self) -> Result<()> {
        let mut changed = Vec::new();
        if self.kube.flavor == Flavor::Microk8s {
            self.kube.microk8s_wait_ready(120).context("MicroK8s is not ready: is it installed (`sudo snap install microk8s --classic --channel=1.33/stable`) and started (`microk8s start`)?")?;
            for addon in ["dns", "hostpath-storage"] {
                if !self.kube.addon_enabled(addon)? {
                    eprintln!("enabling addon {addon}");
                    self.kube.enable(addon)?;
                    changed.push(format!("enabled {addon}"));
                }
            }
        }
        let ns = self.kube.namespace.clone();
        if self
            .kube
            .get::<serde_json::Value>("namespace", &ns)?
            .is_none()
        {
            self.kube.apply(&manifests::render(
                "namespace",
                &serde_json::json!({ "ns": ns }),
            )?)?;
            changed.push(format!("created namespace {ns}"));
        }
        if changed.is_empty() {
            eprintln!("cluster ready, addons dns and hostpath-storage enabled, namespace {ns} present: nothing to change");
        } else {
            eprintln!("cluster ready; {}", changed.join(", "));
        }
        Ok(())
    }
}
