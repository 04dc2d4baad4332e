//! Where apps run. A target is one type behind one trait, and every command is written once
//! against [`Target`]: `local` (the pod's shape as processes on this machine) and `cluster`
//! (MicroK8s or any kubeconfig context). A new target is one folder here plus one line in
//! [`TargetArgs::open`].

pub mod cluster;
pub mod local;
pub mod pod_store;

use std::time::Duration;

use aether_artifact::store::{Store, StoreConfig};
use aether_artifact::{AppName, Digest, Status};
use anyhow::Result;
use xshell::Shell;

use crate::config::Global;
pub use crate::manifests::Runtime;
use crate::release::Release;
pub use pod_store::{PodCredentials, Writer};

pub trait Target {
    /// For people and `--json`: `local` or `cluster`.
    fn name(&self) -> &'static str;

    /// The store as this machine reaches it: the configured one, else the embedded one.
    fn store_config(&self) -> Result<StoreConfig>;

    fn store(&self) -> Result<Store> {
        Ok(Store::new(self.store_config()?)?)
    }

    /// The wanted release; `None` when the app was never deployed here.
    /// The store key the app's pods read with (`allow_writer`: the uploader's may do, on
    /// purpose); asked before anything changes, so a refusal leaves everything as it was.
    fn pod_credentials(&self, app: &AppName, allow_writer: bool) -> Result<PodCredentials>;

    /// The control plane as the CLI reaches it (admin token), when this target has one:
    /// uploads are registered there and history is read from it.
    fn control(&self) -> Result<Option<aether_artifact::control::Client>>;

    /// As [`Target::control`], without starting anything (what a status report may ask):
    /// `Err` when the target has one that is not running.
    fn control_if_running(&self) -> Result<Option<aether_artifact::control::Client>> {
        self.control()
    }

    fn release(&self, app: &AppName) -> Result<Option<Release>>;

    /// The one release update: read the current release, compute the next with `next_of`
    /// (`None`: nothing to do), write it where new pods start from, signal the live pods.
    /// Safe against concurrent writers: generations never collide.
    fn publish(
        &self,
        app: &AppName,
        next_of: &mut dyn FnMut(&Release) -> Result<Option<Release>>,
    ) -> Result<Option<Published>>;

    /// Creates what is missing for the app to run; an app deployed for the first time starts
    /// at `first`. Returns where it answers.
    fn ensure_running(&self, app: &AppName, first: &Release, opts: &DeployOpts) -> Result<Running>;

    /// The first phase of a cutover: tells `pods` (from [`Target::pods`]) to fetch, verify and
    /// extract `digest` without making it live (`None`: stage nothing). Every
    /// [`Target::publish`] clears it.
    fn stage(&self, app: &AppName, digest: Option<Digest>, pods: &[String]) -> Result<()>;

    /// Where the app answers on this machine, when it does.
    fn url(&self, app: &AppName) -> Result<Option<String>>;

    /// Waits until every live pod serves `digest` (fetched, published, the app answering).
    fn wait_served(&self, app: &AppName, digest: &Digest, timeout: Duration) -> Result<()>;

    /// The live pods' names (cheaper than [`Target::statuses`]).
    fn pods(&self, app: &AppName) -> Result<Vec<String>>;

    /// Each live pod's fetcher status, or why it could not be read.
    fn statuses(&self, app: &AppName) -> Result<Vec<PodStatus>>;

    /// How often a live view (the page) may ask for [`Target::release`] and
    /// [`Target::statuses`]: on a cluster each is a request through the API server per pod.
    fn status_poll(&self) -> Duration {
        Duration::from_millis(200)
    }

    /// Prints the app's (or the fetcher's) log as it is now.
    fn logs(&self, app: &AppName, fetcher: bool) -> Result<()>;

    /// Follows the log of every live pod (the fetcher's with `fetcher`), following pods that
    /// come and go, and hands `sink` each line in time order until it returns `false`.
    fn follow_logs(
        &self,
        app: &AppName,
        fetcher: bool,
        sink: &mut dyn FnMut(LogLine) -> bool,
    ) -> Result<()>;

    /// Stops the app; says what it did.
    fn down(&self, app: &AppName) -> Result<()>;

    /// The port inside a pod where `debug` opens node's inspector: 9229 in a pod's own network;
    /// a free one where pods share this machine's.
    fn inspector_port(&self) -> Result<u16> {
        Ok(9229)
    }

    /// Asks `pod`'s app to run with node's inspector on 127.0.0.1:`port`, or (`None`) without:
    /// the pod's `aether.dev/debug` annotation; its `aether-run` switches, no rollout.
    fn set_inspector(&self, app: &AppName, pod: &str, port: Option<u16>) -> Result<()>;

    /// Makes `pod`'s 127.0.0.1:`port` reachable on this machine's loopback, for as long as the
    /// returned [`Forward`] lives.
    fn forward(&self, pod: &str, port: u16) -> Result<Forward>;
}

/// A port of a pod reachable on this machine, until dropped.
pub struct Forward {
    /// The port on 127.0.0.1 here.
    pub local: u16,
    /// What carries it (`kubectl port-forward`); `None` where the pod's loopback is this
    /// machine's.
    pub child: Option<std::process::Child>,
}

impl Forward {
    /// Why the forward no longer carries anything, once it stopped.
    pub fn ended(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => Some(format!("the port-forward ended ({st})")),
            Ok(None) => None,
            Err(e) => Some(format!("the port-forward is lost: {e}")),
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One line of a followed log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    /// RFC 3339: the kubelet's time on a cluster, the time it was read locally.
    pub at: String,
    pub pod: String,
    pub text: String,
}

/// What [`Target::publish`] wrote and whom it told.
#[derive(Debug, Clone)]
pub struct Published {
    pub release: Release,
    pub signalled: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Running {
    pub url: Option<String>,
}

/// Options only some targets use when creating an app.
#[derive(Debug, Clone, Default)]
pub struct DeployOpts {
    /// Command that loads the fetcher image into a cluster's nodes (`{archive}` replaced).
    pub image_import: Option<String>,
    /// What the app needs to run, from its release record.
    pub runtime: Runtime,
    /// Pods to run (cluster targets; the local target runs one): `None` keeps what the
    /// Deployment has, 1 for a new one.
    pub replicas: Option<u32>,
    /// Deploy without a verify key although the running pods verify signatures (which turns
    /// verification off on them): only on purpose.
    pub allow_unsigned: bool,
    /// Give pods the uploader's store key when the store has no read-only one.
    pub allow_writer_credentials: bool,
    /// What [`Target::pod_credentials`] chose, once per deploy.
    pub pod_credentials: Option<PodCredentials>,
}

/// One pod's fetcher as `hot-status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PodStatus {
    pub pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PodStatus {
    /// `None` when this pod serves `want`; else why not, naming the pod.
    pub fn behind(&self, want: &Digest) -> Option<String> {
        match &self.status {
            None => Some(format!(
                "{}: status unreadable: {}",
                self.pod,
                self.error.as_deref().unwrap_or("?")
            )),
            Some(s) if s.digest != Some(*want) => Some(format!(
                "{} serves {} instead{}",
                self.pod,
                s.digest
                    .map(|d| d.short())
                    .unwrap_or_else(|| "nothing".into()),
                s.last_error
                    .as_deref()
                    .map(|e| match s.last_error_cause {
                        Some(c) => format!(" (last error, {c}: {e})"),
                        None => format!(" (last error: {e})"),
                    })
                    .unwrap_or_default()
            )),
            // The fetcher has it live; the app must run it too (when `aether-run` reports), and
            // have switched since the fetcher's pass that published it began: a switch still
            // under way to an older trigger would otherwise pass for the wanted release whenever
            // the release before it has the same digest (a rollback to it).
            Some(s) => match &s.runner {
                Some(r)
                    if r.digest == Some(*want)
                        && r.switched_at_ms
                            .zip(s.seen_at_ms)
                            .is_some_and(|(switched, seen)| switched < seen) =>
                {
                    Some(format!(
                        "{} fetched {} but its app has not switched to it yet (it runs an \
                         earlier generation of the same release)",
                        self.pod,
                        want.short()
                    ))
                }
                Some(r) if r.digest != Some(*want) => Some(format!(
                    "{} fetched {} but its app still runs {} ({})",
                    self.pod,
                    want.short(),
                    r.digest
                        .map(|d| d.short())
                        .unwrap_or_else(|| "nothing".into()),
                    r.last_failure
                        .as_deref()
                        .or(r.last_exit.as_deref())
                        .unwrap_or("starting")
                )),
                _ => None,
            },
        }
    }

    /// The release this pod's app serves: what `aether-run` runs when it reports, else what the
    /// fetcher has live.
    pub fn serves(&self) -> Option<Digest> {
        let s = self.status.as_ref()?;
        match &s.runner {
            Some(r) => r.digest,
            None => s.digest,
        }
    }

    /// Why `want` will not be served on this pod without a new release: its app process failed
    /// to start (the previous one keeps serving).
    pub fn failed(&self, want: &Digest) -> Option<String> {
        let r = self.status.as_ref()?.runner.as_ref()?;
        (r.failed_digest == Some(*want)).then(|| {
            format!(
                "{}: {}",
                self.pod,
                r.last_failure.as_deref().unwrap_or("the app did not start")
            )
        })
    }

    pub fn new(pod: String, url: Option<String>, st: Result<Status>) -> PodStatus {
        match st {
            Ok(s) => PodStatus {
                pod,
                url,
                status: Some(s),
                error: None,
            },
            Err(e) => PodStatus {
                pod,
                url,
                status: None,
                error: Some(format!("{e:#}")),
            },
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Microk8s,
    Kube,
    Local,
}

#[derive(clap::Args, Clone, Debug)]
pub struct TargetArgs {
    /// Where the app runs [default: microk8s when installed and running, else local]
    #[arg(long, global = true, env = "AETHER_TARGET", value_enum)]
    pub target: Option<Kind>,
    /// kubeconfig context for the kube target (default: the current context).
    #[arg(long, global = true, env = "AETHER_KUBE_CONTEXT")]
    pub context: Option<String>,
    /// Namespace of the apps on a cluster.
    #[arg(long, global = true, env = "AETHER_NAMESPACE", default_value = crate::manifests::NAMESPACE)]
    pub namespace: String,
}

impl TargetArgs {
    /// The chosen kind, printed so a user always knows where a command went.
    pub fn resolve(&self, sh: &Shell) -> Kind {
        let (t, why) = match self.target {
            Some(t) => (t, "chosen"),
            None if cluster::kube::host::microk8s_running(sh) => {
                (Kind::Microk8s, "microk8s is installed and running")
            }
            None => (
                Kind::Local,
                "no running microk8s found; pass --target kube for another cluster",
            ),
        };
        eprintln!("target: {} ({why})", format!("{t:?}").to_lowercase());
        t
    }

    /// The resolver: the one place that maps a kind to its implementation.
    pub fn open<'a>(&self, sh: &'a Shell, global: &Global) -> Box<dyn Target + 'a> {
        self.open_kind(sh, global, self.resolve(sh))
    }

    /// A target of a kind chosen by the caller rather than the flags (the bench measures the
    /// local target whatever the user's default is).
    pub fn open_kind<'a>(
        &self,
        sh: &'a Shell,
        global: &Global,
        kind: Kind,
    ) -> Box<dyn Target + 'a> {
        match kind {
            Kind::Local => Box::new(local::Local::new(global)),
            k => Box::new(self.open_cluster(sh, global, k)),
        }
    }

    /// The cluster itself, for what only a cluster has (`render`, `k8s-start`, `doctor`,
    /// `bootstrap`): its kubectl, namespace and manifests beyond the [`Target`] trait.
    pub fn open_cluster<'a>(
        &self,
        sh: &'a Shell,
        global: &Global,
        kind: Kind,
    ) -> cluster::Cluster<'a> {
        cluster::Cluster::new(sh, global, self, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_artifact::{RunState, RunnerStatus, Status};

    /// The app switched before the fetcher's pass that published the wanted release began: it
    /// runs an earlier generation of the same digest, and a switch may still be under way.
    #[test]
    fn an_app_that_switched_before_the_publish_is_behind() {
        let d = Digest::parse(&"a".repeat(64)).unwrap();
        let pod = |switched: u64| PodStatus {
            pod: "p".into(),
            url: None,
            status: Some(Status {
                digest: Some(d),
                seen_at_ms: Some(1_000),
                runner: Some(RunnerStatus {
                    state: RunState::Serving,
                    digest: Some(d),
                    switched_at_ms: Some(switched),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            error: None,
        };
        assert!(pod(900)
            .behind(&d)
            .unwrap()
            .contains("not switched to it yet"));
        assert_eq!(pod(1_000).behind(&d), None);
        assert_eq!(pod(1_200).behind(&d), None);
    }
}
