//! The `microk8s` and `kube` targets: every command goes through the typed wrapper in `kube`.
//! A hot reload updates the release ConfigMap and annotates the live pods; it never touches the
//! Deployment, whose template change would be a rollout.

use std::collections::BTreeMap;
use std::time::Duration;

use aether_artifact::store::StoreConfig;
use aether_artifact::{release, AppName, Digest};
use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::config::Global;
pub mod kube;

use crate::manifests::{self, AppValues, StoreValues};
use crate::release::Release;
use crate::targets::pod_store::{self, CredentialKind, PodCredentials, Writer};
use crate::targets::{
    DeployOpts, Forward, Kind, LogLine, PodStatus, Published, Running, Target, TargetArgs,
};
use kube::{AppObjects, ApplyError, Flavor, Kube};

mod control_config;
mod follow;
mod images;
mod store;
mod waits;

pub use images::{control_image, fetcher_image, import_command, store_image};
pub use store::{minio_cluster_endpoint, DEFAULT_HOST_ENDPOINT};

pub struct Cluster<'a> {
    pub kube: Kube<'a>,
    global: Global,
}

impl<'a> Cluster<'a> {
    pub(super) fn new(sh: &'a Shell, global: &Global, target: &TargetArgs, t: Kind) -> Cluster<'a> {
        let flavor = match t {
            Kind::Microk8s => Flavor::Microk8s,
            _ => Flavor::Kube {
                context: target.context.clone(),
            },
        };
        Cluster {
            kube: Kube::new(sh, flavor, &target.namespace)
                .with_run_dir(global.state_dir().join("run")),
            global: global.clone(),
        }
    }

    fn values(
        &self,
        app: &AppName,
        release: &Release,
        store: &StoreConfig,
        pods_endpoint: String,
        creds: &PodCredentials,
    ) -> Result<AppValues> {
        Ok(AppValues {
            ns: self.kube.namespace.clone(),
            app: app.to_string(),
            replicas: 1,
            store_secret: manifests::store_secret_name(app.as_str()),
            fetcher_image: fetcher_image()?,
            node_image: crate::targets::Runtime::default().node_image(),
            max_expanded: crate::targets::Runtime::default().max_expanded(),
            volume_mib: crate::targets::Runtime::default().volume_mib(),
            store: StoreValues {
                endpoint: pods_endpoint,
                region: store.region.clone(),
                bucket: store.bucket.clone(),
                access_key: creds.access_key.clone(),
                secret_key: creds.secret_key.expose().to_string(),
                ca_pem: match &store.ca_file {
                    Some(p) => Some(std::fs::read_to_string(p).with_context(|| {
                        format!("reading the store's CA {} (AETHER_S3_CA_FILE)", p.display())
                    })?),
                    None => None,
                },
            },
            release: release.to_data(),
            verify_key: crate::keys::verify_key()?,
            control_url: None,
        })
    }

    /// The one release-update sequence of the cluster: read the app's objects, compute the next
    /// release, write the ConfigMap conditioned on the `resourceVersion` read (a concurrent
    /// change makes it re-read and retry, so generations never collide), then annotate every
    /// live pod so the kubelet refreshes both volumes at once.
    fn publish_release(
        &self,
        app: &AppName,
        next_of: &mut dyn FnMut(&Release) -> Result<Option<Release>>,
    ) -> Result<Option<Published>> {
        const ATTEMPTS: u32 = 40;
        let name = release::configmap_name(app.as_str());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Writers that collided must not collide again in lockstep: a random pause.
                let r = u64::from_str_radix(&crate::config::random_hex(2)?, 16)?;
                std::thread::sleep(Duration::from_millis(
                    50 + r % (100 * u64::from(attempt.min(5))),
                ));
            }
            let objs = self.kube.app_objects(app.as_str())?;
            let cm = objs.release.as_ref().with_context(|| {
                format!(
                    "{app} is not deployed in namespace {}: run `cargo xtask deploy-sample {app}` first",
                    self.kube.namespace
                )
            })?;
            let current = release_of(&objs)?.unwrap_or_default();
            let Some(next) = next_of(&current)? else {
                return Ok(None);
            };
            let yaml = manifests::render(
                "release-configmap",
                &serde_json::json!({
                    "ns": self.kube.namespace,
                    "app": app.as_str(),
                    "release": next.to_data(),
                    "resource_version": cm.metadata.resource_version,
                }),
            )?;
            match self.kube.apply_configmap_conditional(&name, &yaml) {
                Ok(()) => {}
                Err(ApplyError::Conflict(what)) => {
                    eprintln!("{what} changed meanwhile (another hot-patch?); reading it again");
                    continue;
                }
                Err(ApplyError::Other(e)) => return Err(e),
            }
            let pods: Vec<&str> = objs
                .live_pods()
                .into_iter()
                .filter_map(|p| p.metadata.name.as_deref())
                .collect();
            self.kube
                .annotate(&self.hear_by_volume(&pods), &next.annotations(None))?;
            return Ok(Some(Published {
                release: next,
                signalled: pods.into_iter().map(String::from).collect(),
            }));
        }
        bail!("configmap/{name} changed {ATTEMPTS} times while updating it: retry when other hot-patches are done")
    }

    /// The pods whose fetchers do not report hearing from the API watch (or whose status cannot
    /// be read): only they need the news in their annotations. Patching the others would only
    /// make their kubelets refresh volumes, work that landed in the middle of the cutover's
    /// switch and spread it (p95 80 ms against 45 ms without, on these two cores).
    fn hear_by_volume<'p>(&self, pods: &[&'p str]) -> Vec<&'p str> {
        let names: Vec<String> = pods.iter().map(|p| p.to_string()).collect();
        self.kube
            .fetcher_statuses(&names)
            .into_iter()
            .zip(pods)
            .filter(|(st, _)| {
                !st.as_ref()
                    .is_ok_and(|s| s.news.as_deref().is_some_and(|n| n.starts_with("api")))
            })
            .map(|(_, p)| *p)
            .collect()
    }

    /// The app's NodePort URL on this machine, if its Service has one.
    fn url(&self, app: &AppName) -> Result<Option<String>> {
        Ok(self
            .kube
            .service(app.as_str())?
            .and_then(|s| s.spec)
            .and_then(|s| s.ports)
            .and_then(|p| p.first().and_then(|p| p.node_port))
            .map(|p| format!("http://127.0.0.1:{p}/")))
    }

    /// The manifests for review or GitOps. Credentials are placeholders: they never go to stdout.
    pub fn render(&self, app: &AppName, digest: Digest) -> Result<String> {
        let release = Release::default()
            .next(digest)
            .expect("an empty release differs from any digest");
        let layers = self.global.store_layers()?;
        let pods_endpoint = layers
            .endpoint
            .clone()
            .unwrap_or_else(|| minio_cluster_endpoint(&self.kube.namespace));
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
            ca_file: None,
        };
        let placeholder = PodCredentials {
            access_key: "REPLACE_ME".into(),
            secret_key: aether_artifact::store::Secret::new("REPLACE_ME"),
            kind: CredentialKind::ReadOnly,
        };
        manifests::render_app(
            &self.values(app, &release, &store, pods_endpoint, &placeholder)?,
            true,
        )
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

fn release_of(objs: &AppObjects) -> Result<Option<Release>> {
    let Some(cm) = &objs.release else {
        return Ok(None);
    };
    let data: BTreeMap<String, String> = cm.data.clone().unwrap_or_default();
    Ok(Some(
        Release::from_data(&data).context("reading the release ConfigMap")?,
    ))
}

impl Target for Cluster<'_> {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn store_config(&self) -> Result<StoreConfig> {
        self.host_store_config()
    }

    fn pod_credentials(&self, app: &AppName, allow_writer: bool) -> Result<PodCredentials> {
        let (store, _) = self.stores()?;
        let writer = if allow_writer {
            Writer::AllowedByFlag
        } else {
            Writer::Refuse
        };
        pod_store::pod_credentials(app, &store, &self.global.store_layers()?, writer)
    }

    fn control(&self) -> Result<Option<aether_artifact::control::Client>> {
        self.control_client()
    }

    fn release(&self, app: &AppName) -> Result<Option<Release>> {
        release_of(&self.kube.app_objects(app.as_str())?)
    }

    fn publish(
        &self,
        app: &AppName,
        next_of: &mut dyn FnMut(&Release) -> Result<Option<Release>>,
    ) -> Result<Option<Published>> {
        self.publish_release(app, next_of)
    }

    /// Applies the app's objects (server-side, one field manager). The release ConfigMap is
    /// part of them only when it does not exist yet: an existing one changes only through
    /// [`Target::publish`], conditioned on what was read.
    fn ensure_running(&self, app: &AppName, first: &Release, opts: &DeployOpts) -> Result<Running> {
        let (store, pods_endpoint) = self.stores()?;
        let control = self.control_config()?;
        let creds = match (&opts.pod_credentials, &control) {
            (Some(c), _) => c.clone(),
            // Nothing of the store reaches the pods: the key fields are not rendered.
            (None, Some(_)) => PodCredentials {
                access_key: String::new(),
                secret_key: aether_artifact::store::Secret::default(),
                kind: CredentialKind::PerApp,
            },
            (None, None) => self.pod_credentials(app, opts.allow_writer_credentials)?,
        };
        let image = fetcher_image()?;
        self.ensure_image(
            &image,
            &crate::images::fetcher::archive(),
            "AETHER_FETCHER_IMAGE",
            opts.image_import.as_deref(),
        )?;
        let objs = self.kube.app_objects(app.as_str())?;
        let release = release_of(&objs)?;
        let mut values = self.values(
            app,
            release.as_ref().unwrap_or(first),
            &store,
            pods_endpoint,
            &creds,
        )?;
        values.control_url = control.and_then(|c| c.cluster_url);
        if values.control_url.is_some() {
            // A store key left from a deploy before the control plane came must not linger.
            self.kube
                .delete(&[format!("secret/{}", values.store_secret)])?;
        }
        values.node_image = opts.runtime.node_image();
        values.max_expanded = opts.runtime.max_expanded();
        values.volume_mib = opts.runtime.volume_mib();
        // Applying the template must not undo a `kubectl scale` the user made.
        values.replicas = opts
            .replicas
            .or_else(|| {
                let d = objs.deployment.as_ref()?;
                d.spec
                    .as_ref()?
                    .replicas
                    .and_then(|r| u32::try_from(r).ok())
            })
            .unwrap_or(1);
        self.kube.apply(&manifests::render_app_parts(
            &values,
            release.is_none(),
            !self.kube.namespace_ready()?,
        )?)?;
        Ok(Running {
            url: self.url(app)?,
        })
    }

    /// The Deployment's own rollout first: only pods of its current ReplicaSet count, not those
    /// of an earlier Deployment of the same name that are still terminating. Then every live
    /// pod's fetcher must report the digest. A failure comes with a diagnosis.
    fn wait_served(&self, app: &AppName, digest: &Digest, timeout: Duration) -> Result<()> {
        let t0 = std::time::Instant::now();
        // A hot reload finds the rollout long complete: one list says so, without a kubectl
        // process; a deploy waits for it.
        let rolled_out = self.kube.app_objects(app.as_str())?.rolled_out();
        let rollout = match rolled_out {
            true => Ok(()),
            false => self
                .kube
                .rollout_status(&format!("deployment/{app}"), timeout.as_secs()),
        };
        rollout
            .and_then(|()| self.wait_synced(app, digest, timeout.saturating_sub(t0.elapsed())))
            .and_then(|()| self.wait_url(app, timeout.saturating_sub(t0.elapsed())))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e:#}\n--- diagnosis ---\n{}",
                    self.kube.diagnose(app.as_str())
                )
            })
    }

    /// The request in the release ConfigMap (fetchers that watch it hear in milliseconds) and
    /// in the pods' annotations (those that do not), in one round of requests.
    fn stage(&self, app: &AppName, digest: Option<Digest>, pods: &[String]) -> Result<()> {
        let names: Vec<&str> = pods.iter().map(String::as_str).collect();
        self.kube.stage(
            &release::configmap_name(app.as_str()),
            digest,
            &self.hear_by_volume(&names),
        )
    }

    fn pods(&self, app: &AppName) -> Result<Vec<String>> {
        Ok(self
            .kube
            .app_objects(app.as_str())?
            .live_pods()
            .into_iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect())
    }

    fn url(&self, app: &AppName) -> Result<Option<String>> {
        Cluster::url(self, app)
    }

    fn statuses(&self, app: &AppName) -> Result<Vec<PodStatus>> {
        let names = self.pods(app)?;
        let statuses = self.kube.fetcher_statuses(&names);
        Ok(names
            .into_iter()
            .zip(statuses)
            .map(|(name, st)| PodStatus::new(name, None, st))
            .collect())
    }

    fn logs(&self, app: &AppName, fetcher: bool) -> Result<()> {
        self.kube
            .cmd_logs(app.as_str(), follow::container(fetcher))
            .run()
            .context("streaming logs")?;
        Ok(())
    }

    fn follow_logs(
        &self,
        app: &AppName,
        fetcher: bool,
        sink: &mut dyn FnMut(LogLine) -> bool,
    ) -> Result<()> {
        follow::follow(self, app, follow::container(fetcher), sink)
    }

    fn set_inspector(&self, app: &AppName, pod: &str, port: Option<u16>) -> Result<()> {
        if !self.pods(app)?.iter().any(|p| p == pod) {
            bail!("{app} has no live pod {pod}: `cargo xtask hot-status {app}` lists them");
        }
        let value = port.map(|p| p.to_string()).unwrap_or_default();
        let pairs = [(aether_artifact::keys::DEBUG.to_string(), value)]
            .into_iter()
            .collect();
        self.kube.annotate(&[pod], &pairs)
    }

    fn forward(&self, pod: &str, port: u16) -> Result<Forward> {
        self.kube.port_forward(pod, port)
    }

    fn down(&self, app: &AppName) -> Result<()> {
        self.kube.delete_app(app.as_str())?;
        eprintln!("deleted the Deployment, Service and release ConfigMap of {app}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_artifact::store::{PartialStore, Secret};

    /// The in-cluster MinIO lives in the namespace bootstrap deployed it to, not always in
    /// `aether-system` (it was hard-coded there).
    #[test]
    fn pods_reach_bootstraps_minio_in_the_apps_namespace() {
        let t = tempfile::tempdir().unwrap();
        let global = Global {
            project_dir: Some(t.path().to_path_buf()),
            s3_endpoint: Some(DEFAULT_HOST_ENDPOINT.into()),
            ..Default::default()
        };
        crate::config::ProjectConfig {
            store: PartialStore {
                access_key: Some("ak".into()),
                secret_key: Some(Secret::new("sk")),
                ..Default::default()
            },
            ..Default::default()
        }
        .save(&global.state_dir())
        .unwrap();
        let sh = Shell::new().unwrap();
        let args = TargetArgs {
            target: Some(Kind::Kube),
            context: None,
            namespace: "team-a".into(),
        };
        let c = Cluster::new(&sh, &global, &args, Kind::Kube);
        let (host, pods) = c.stores().unwrap();
        assert_eq!(host.endpoint, DEFAULT_HOST_ENDPOINT);
        assert_eq!(pods, "http://minio.team-a.svc.cluster.local:9000");
        // Any other configured store is reached by pods under the same address.
        let other = Global {
            s3_endpoint: Some("http://10.1.2.3:9000".into()),
            ..global.clone()
        };
        let c = Cluster::new(&sh, &other, &args, Kind::Kube);
        assert_eq!(c.stores().unwrap().1, "http://10.1.2.3:9000");
    }
}
