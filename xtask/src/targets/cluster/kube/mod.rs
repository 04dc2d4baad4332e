//! The one place that calls `kubectl` and `microk8s` (this folder: `host` for the MicroK8s
//! installation itself, `objects` for what the JSON means). Typed functions build the command
//! lines (unit-tested as data through `Cmd::to_string`), JSON output is parsed into the
//! Kubernetes types, manifests and secrets go in on stdin, and failures quote kubectl and say
//! what to do.

mod api;
mod calls;
pub mod host;
mod nodes;
mod objects;
mod platform_objects;
mod pod_logs;
mod port_forward;

pub use nodes::unschedulable;
pub use objects::{describe_pod, AppObjects};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde::de::DeserializeOwned;
use xshell::{cmd, Cmd, Shell};

use aether_artifact::keys;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavor {
    /// `microk8s kubectl …`
    Microk8s,
    /// `kubectl [--context C] …`
    Kube { context: Option<String> },
}

pub struct Kube<'a> {
    sh: &'a Shell,
    pub flavor: Flavor,
    pub namespace: String,
    /// Where the proxy's socket goes (`.aether/run`); the API is started on first use.
    run_dir: std::path::PathBuf,
    api: std::sync::OnceLock<api::Api>,
}

/// A list as `kubectl get … -o json` prints it.
#[derive(Debug, serde::Deserialize)]
pub struct List<T> {
    pub items: Vec<T>,
}

/// Field manager of every server-side apply: one owner for everything the tool writes.
pub const FIELD_MANAGER: &str = "aether-dev";

/// Why an apply failed, where the caller acts on it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The object changed since it was read (its `resourceVersion` no longer matches).
    #[error("{0} changed since it was read")]
    Conflict(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl<'a> Kube<'a> {
    pub fn new(sh: &'a Shell, flavor: Flavor, namespace: &str) -> Kube<'a> {
        Kube {
            sh,
            flavor,
            namespace: namespace.to_string(),
            run_dir: std::env::temp_dir(),
            api: std::sync::OnceLock::new(),
        }
    }

    /// Puts the API proxy's socket in `dir` (private to its owner) instead of the temp dir.
    pub fn with_run_dir(mut self, dir: std::path::PathBuf) -> Kube<'a> {
        self.run_dir = dir;
        self
    }

    /// The API server through one `kubectl proxy`, started on first use for this command.
    fn api(&self) -> Result<&api::Api> {
        if let Some(a) = self.api.get() {
            return Ok(a);
        }
        let c = self.kubectl().arg("proxy");
        let a = api::Api::start(std::process::Command::from(c), &self.run_dir)?;
        Ok(self.api.get_or_init(|| a))
    }

    /// `kubectl` with the cluster selection and, always, an explicit namespace.
    fn kubectl(&self) -> Cmd<'a> {
        let ns = &self.namespace;
        match &self.flavor {
            Flavor::Microk8s => cmd!(self.sh, "microk8s kubectl -n {ns}"),
            Flavor::Kube { context } => {
                let ctx: Vec<String> = context
                    .iter()
                    .flat_map(|c| ["--context".to_string(), c.clone()])
                    .collect();
                cmd!(self.sh, "kubectl {ctx...} -n {ns}")
            }
        }
    }

    // --- command lines ----------------------------------------------------------------------

    /// Server-side apply under one field manager; `--force-conflicts` because objects may have
    /// been created by an older client-side apply.
    pub fn cmd_apply(&self) -> Cmd<'a> {
        self.kubectl().args([
            "apply",
            "--server-side",
            &format!("--field-manager={FIELD_MANAGER}"),
            "--force-conflicts",
            "-f",
            "-",
        ])
    }
    pub fn cmd_nodes(&self) -> Cmd<'a> {
        self.kubectl().args(["get", "nodes", "-o", "json"])
    }
    pub fn cmd_get_json(&self, kind: &str, name: &str) -> Cmd<'a> {
        self.kubectl().args(["get", kind, name, "-o", "json"])
    }
    pub fn cmd_pods(&self, app: &str) -> Cmd<'a> {
        self.kubectl().args([
            "get",
            "pods",
            "-l",
            &format!("{}={app}", keys::APP),
            "-o",
            "json",
        ])
    }
    pub fn cmd_fetcher_status(&self, pod: &str) -> Cmd<'a> {
        self.kubectl().args([
            "exec",
            pod,
            "-c",
            "aether-fetcher",
            "--",
            aether_artifact::FetcherEnv::BIN_IN_IMAGE,
            "status",
        ])
    }
    /// Every pod's log, each line prefixed with its pod (`deployment/x` would pick one pod);
    /// following is [`Kube::follow_pod_log`]'s, per pod.
    pub fn cmd_logs(&self, app: &str, container: &str) -> Cmd<'a> {
        self.kubectl().args([
            "logs",
            "-l",
            &format!("{}={app}", keys::APP),
            "-c",
            container,
            "--prefix",
            "--tail=200",
            "--max-log-requests=50",
        ])
    }
    pub fn cmd_events(&self, pod: &str) -> Cmd<'a> {
        self.kubectl().args([
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "json",
        ])
    }
    pub fn cmd_fetcher_tail(&self, pod: &str) -> Cmd<'a> {
        self.kubectl()
            .args(["logs", pod, "-c", "aether-fetcher", "--tail=20"])
    }
    pub fn cmd_delete_app(&self, app: &str) -> Cmd<'a> {
        self.kubectl().args([
            "delete",
            "deployment,service,configmap,secret,serviceaccount,role,rolebinding",
            "-l",
            &format!("{}={app}", keys::APP),
            "--ignore-not-found",
        ])
    }
    pub fn cmd_rollout_status(&self, what: &str, timeout_secs: u64) -> Cmd<'a> {
        self.kubectl().args([
            "rollout",
            "status",
            what,
            &format!("--timeout={timeout_secs}s"),
        ])
    }
    pub fn cmd_image_list(&self) -> Cmd<'a> {
        cmd!(self.sh, "microk8s ctr image ls -q")
    }
    pub fn cmd_image_import(&self, archive: &std::path::Path) -> Cmd<'a> {
        cmd!(self.sh, "microk8s ctr image import {archive}")
    }
    pub fn cmd_status_wait_ready(&self, timeout_secs: u64) -> Cmd<'a> {
        let t = timeout_secs.to_string();
        cmd!(self.sh, "microk8s status --wait-ready --timeout {t}")
    }
    pub fn cmd_addon_status(&self, addon: &str) -> Cmd<'a> {
        cmd!(self.sh, "microk8s status -a {addon}")
    }
    pub fn cmd_enable(&self, addon: &str) -> Cmd<'a> {
        cmd!(self.sh, "microk8s enable {addon}")
    }

    // --- running ----------------------------------------------------------------------------

    /// Runs a command; a non-zero exit becomes an error that quotes its stderr and says what to do.
    fn run(&self, c: Cmd<'a>, what: &str, stdin: Option<&str>) -> Result<String> {
        let line = c.to_string();
        let c = match stdin {
            Some(s) => c.stdin(s),
            None => c,
        };
        let out =
            c.quiet().ignore_status().output().with_context(|| {
                format!("{what}: running `{line}`: is it installed and on PATH?")
            })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        bail!("{what} failed: `{line}` said: {err}\n{}", hint(&err))
    }

    /// Applies manifests given on stdin (secrets included: never on a command line).
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.run(self.cmd_apply(), "applying manifests", Some(yaml))
    }

    pub fn nodes(&self) -> Result<Vec<Node>> {
        let out = self.run(self.cmd_nodes(), "listing nodes", None)?;
        Ok(serde_json::from_str::<List<Node>>(&out)
            .context("parsing `kubectl get nodes -o json`")?
            .items)
    }

    /// An object, or `None` when it does not exist.
    pub fn get<T: DeserializeOwned>(&self, kind: &str, name: &str) -> Result<Option<T>> {
        self.get_with(self.cmd_get_json(kind, name), &format!("{kind}/{name}"))
    }

    /// Runs a `kubectl get … -o json` command line; `None` when the object does not exist.
    fn get_with<T: DeserializeOwned>(&self, c: Cmd<'a>, what: &str) -> Result<Option<T>> {
        let line = c.to_string();
        let out = c
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("running `{line}`"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("NotFound") || err.contains("not found") {
                return Ok(None);
            }
            bail!(
                "reading {what} failed: `{line}` said: {}\n{}",
                err.trim(),
                hint(&err)
            );
        }
        Ok(Some(serde_json::from_slice(&out.stdout).with_context(
            || format!("parsing the output of `{line}`"),
        )?))
    }

    /// The app's pods that are not being deleted (any owner: for diagnosis).
    pub fn pods(&self, app: &str) -> Result<Vec<Pod>> {
        let out = self.run(self.cmd_pods(app), "listing pods", None)?;
        let list: List<Pod> =
            serde_json::from_str(&out).context("parsing `kubectl get pods -o json`")?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// Every pod's fetcher status at once: one `kubectl exec` per pod, run side by side (where
    /// the pod proxy is forbidden).
    fn exec_fetcher_statuses(&self, pods: &[String]) -> Vec<Result<aether_artifact::Status>> {
        use std::process::{Command, Stdio};
        let children: Vec<_> = pods
            .iter()
            .map(|pod| {
                let c = self.cmd_fetcher_status(pod);
                let line = c.to_string();
                let child = Command::from(c)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn();
                (pod, line, child)
            })
            .collect();
        children
            .into_iter()
            .map(|(pod, line, child)| {
                let what = format!("reading the fetcher status of {pod}");
                let out = child.and_then(|c| c.wait_with_output()).with_context(|| {
                    format!("{what}: running `{line}`: is it installed and on PATH?")
                })?;
                if !out.status.success() {
                    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    bail!("{what} failed: `{line}` said: {err}\n{}", hint(&err));
                }
                serde_json::from_slice(&out.stdout).context("parsing `aether-fetcher status`")
            })
            .collect()
    }

    /// What a user needs when a pod does not come up: phase, container states, events, and the
    /// fetcher's last lines.
    pub fn diagnose(&self, app: &str) -> String {
        let mut out = String::new();
        let pods = match self.pods(app) {
            Ok(p) => p,
            Err(e) => return format!("(cannot list pods: {e:#})"),
        };
        if pods.is_empty() {
            out.push_str(
                "no pod exists for the app (check the Deployment and its ReplicaSet events)\n",
            );
        }
        let pending = pods
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"));
        if pending {
            if let Ok(nodes) = self.nodes() {
                for l in unschedulable(&nodes) {
                    out.push_str(&format!("{l}\n"));
                }
            }
        }
        for p in pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            out.push_str(&describe_pod(&p));
            if let Ok(ev) = self.run(self.cmd_events(&name), "reading events", None) {
                if let Ok(list) =
                    serde_json::from_str::<List<k8s_openapi::api::core::v1::Event>>(&ev)
                {
                    for e in list.items.iter().rev().take(8) {
                        out.push_str(&format!(
                            "  event {}: {}\n",
                            e.reason.as_deref().unwrap_or("?"),
                            e.message.as_deref().unwrap_or("").trim()
                        ));
                    }
                }
            }
            if let Ok(logs) = self.run(self.cmd_fetcher_tail(&name), "reading fetcher logs", None) {
                out.push_str("  fetcher log:\n");
                for l in logs.lines() {
                    out.push_str(&format!("    {l}\n"));
                }
            }
        }
        out
    }

    pub fn delete_app(&self, app: &str) -> Result<()> {
        self.run(self.cmd_delete_app(app), &format!("deleting {app}"), None)
            .map(|_| ())
    }

    pub fn rollout_status(&self, what: &str, timeout_secs: u64) -> Result<()> {
        self.run(
            self.cmd_rollout_status(what, timeout_secs),
            &format!("waiting for {what}"),
            None,
        )
        .map(|_| ())
    }

    pub fn images(&self) -> Result<Vec<String>> {
        Ok(self
            .run(self.cmd_image_list(), "listing images", None)?
            .lines()
            .map(str::to_string)
            .collect())
    }

    pub fn import_image(&self, archive: &std::path::Path) -> Result<()> {
        self.run(
            self.cmd_image_import(archive),
            "importing the sidecar image",
            None,
        )
        .map(|_| ())
    }

    pub fn microk8s_wait_ready(&self, timeout_secs: u64) -> Result<()> {
        self.run(
            self.cmd_status_wait_ready(timeout_secs),
            "waiting for MicroK8s",
            None,
        )
        .map(|_| ())
    }

    pub fn addon_enabled(&self, addon: &str) -> Result<bool> {
        let out = self.run(
            self.cmd_addon_status(addon),
            &format!("checking addon {addon}"),
            None,
        )?;
        Ok(out.trim() == "enabled")
    }

    pub fn enable(&self, addon: &str) -> Result<()> {
        self.run(
            self.cmd_enable(addon),
            &format!("enabling addon {addon}"),
            None,
        )
        .map(|_| ())
    }
}

pub(super) fn hint(stderr: &str) -> &'static str {
    if stderr.contains("connection refused")
        || stderr.contains("Unable to connect")
        || stderr.contains("no such host")
    {
        "hint: the cluster is not reachable: run `cargo xtask k8s-start` (MicroK8s) or check your kubeconfig context"
    } else if stderr.contains("Forbidden") || stderr.contains("forbidden") {
        "hint: your user lacks a permission (RBAC); it needs get/list/patch on pods and configmaps and create/update on deployments, services and secrets in the namespace"
    } else if stderr.contains("insufficient permissions") || stderr.contains("microk8s group") {
        "hint: add yourself to the microk8s group: `sudo usermod -a -G microk8s $USER` and log in again"
    } else if stderr.contains("timed out") {
        "hint: the pod did not get ready in time; see the diagnosis below"
    } else {
        "hint: run the command above yourself to see more"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_as_data() {
        let sh = Shell::new().unwrap();
        let m = Kube::new(&sh, Flavor::Microk8s, "aether-system");
        let k = Kube::new(
            &sh,
            Flavor::Kube {
                context: Some("kind-dev".into()),
            },
            "team-a",
        );
        let plain = Kube::new(&sh, Flavor::Kube { context: None }, "default");
        assert_eq!(
            m.cmd_apply().to_string(),
            "microk8s kubectl -n aether-system apply --server-side --field-manager=aether-dev --force-conflicts -f -"
        );
        assert_eq!(
            k.cmd_delete_app("demo").to_string(),
            "kubectl --context kind-dev -n team-a delete deployment,service,configmap,secret,serviceaccount,role,rolebinding -l aether.dev/app=demo --ignore-not-found"
        );
        assert_eq!(
            plain.cmd_get_json("configmap", "demo-release").to_string(),
            "kubectl -n default get configmap demo-release -o json"
        );
        assert_eq!(
            m.cmd_pods("demo").to_string(),
            "microk8s kubectl -n aether-system get pods -l aether.dev/app=demo -o json"
        );
        assert_eq!(
            m.cmd_fetcher_status("demo-1").to_string(),
            "microk8s kubectl -n aether-system exec demo-1 -c aether-fetcher -- /aether-fetcher status"
        );
        assert_eq!(
            m.cmd_logs("demo", "app").to_string(),
            "microk8s kubectl -n aether-system logs -l aether.dev/app=demo -c app --prefix --tail=200 --max-log-requests=50"
        );
        assert_eq!(
            m.cmd_status_wait_ready(120).to_string(),
            "microk8s status --wait-ready --timeout 120"
        );
        assert_eq!(
            m.cmd_addon_status("dns").to_string(),
            "microk8s status -a dns"
        );
        assert_eq!(
            m.cmd_image_import(std::path::Path::new("/tmp/f.tar"))
                .to_string(),
            "microk8s ctr image import /tmp/f.tar"
        );
    }

    /// Shapes of real `kubectl get pods -o json` output (trimmed): a running pod with a native
    /// sidecar, and one stuck pulling its image.
    const PODS: &str = include_str!("../../../../tests/data/pods.json");

    #[test]
    fn parses_pod_lists_and_describes_them() {
        let list: List<Pod> = serde_json::from_str(PODS).unwrap();
        assert_eq!(list.items.len(), 2);
        let running = describe_pod(&list.items[0]);
        assert!(
            running.starts_with("pod demo-7c9d8f6b5-x2x4k: Running"),
            "{running}"
        );
        assert!(
            running.contains("container aether-fetcher: running ready=true restarts=0"),
            "{running}"
        );
        assert!(
            running.contains("container app: running ready=true"),
            "{running}"
        );
        let stuck = describe_pod(&list.items[1]);
        assert!(
            stuck.contains("Pending") && stuck.contains("waiting: ImagePullBackOff"),
            "{stuck}"
        );
        assert_eq!(
            list.items[0].metadata.annotations.as_ref().unwrap()["aether.dev/generation"],
            "3"
        );
    }

    /// Which pods a command signals and waits for: only those of the current Deployment's
    /// ReplicaSets that are not being deleted. The leftover of an earlier Deployment of the
    /// same name (`down` then `deploy-sample`) has the same labels; it must not count.
    #[test]
    fn live_pods_belong_to_the_current_deployment() {
        let owner = |kind: &str, name: &str, uid: &str| serde_json::json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid}]);
        let pod = |name: &str, rs_uid: &str, deleting: bool| {
            let mut p = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "ownerReferences": owner("ReplicaSet", "rs", rs_uid)}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = "2026-11-29T10:00:00Z".into();
            }
            p
        };
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "demo", "uid": "dep-new"}},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "demo-1", "uid": "rs-new",
                "ownerReferences": owner("Deployment", "demo", "dep-new")}},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "demo-1", "uid": "rs-old",
                "ownerReferences": owner("Deployment", "demo", "dep-old")}},
            pod("new-a", "rs-new", false),
            pod("new-b", "rs-new", true),
            pod("old", "rs-old", false),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo-release"}, "data": {"generation": "4"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}},
        ]});
        let o = AppObjects::from_items(list["items"].as_array().unwrap().clone(), "demo-release")
            .unwrap();
        let live: Vec<&str> = o
            .live_pods()
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(live, ["new-a"]);
        assert_eq!(o.release.unwrap().data.unwrap()["generation"], "4");
        let none = AppObjects::from_items(Vec::new(), "demo-release").unwrap();
        assert!(none.live_pods().is_empty() && none.release.is_none());
    }

    #[test]
    fn hints_for_common_failures() {
        assert!(hint("The connection to the server 127.0.0.1:16443 was refused - did you specify the right host or port? dial tcp: connect: connection refused").contains("k8s-start"));
        assert!(hint("Error from server (Forbidden): pods \"x\" is forbidden").contains("RBAC"));
    }
}
