//! The calls a hot reload makes, over the API server through [`super::api::Api`] rather than a
//! kubectl process each: the app's objects (four lists at once), the release ConfigMap's
//! conditional apply, the pods' annotations (all pods at once) and every fetcher's `/status`
//! through the pod proxy (all at once). Each request is built by a function, so the paths are
//! tested as data.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use hyper::StatusCode;

use aether_artifact::{keys, release, Digest, FetcherEnv};

use super::api::{Req, Resp};
use super::{AppObjects, ApplyError, Kube, List, FIELD_MANAGER};

/// Where each kind of an app's objects is listed, and its kind (list items carry none).
const APP_LISTS: [(&str, &str); 4] = [
    ("apis/apps/v1", "deployments"),
    ("apis/apps/v1", "replicasets"),
    ("api/v1", "pods"),
    ("api/v1", "configmaps"),
];

impl Kube<'_> {
    pub fn req_app_objects(&self, app: &str) -> Vec<Req> {
        let sel = format!("{}%3D{app}", keys::APP.replace('/', "%2F"));
        APP_LISTS
            .iter()
            .map(|(group, res)| {
                Req::get(format!(
                    "/{group}/namespaces/{}/{res}?labelSelector={sel}",
                    self.namespace
                ))
            })
            .collect()
    }

    pub fn req_annotate(&self, pod: &str, pairs: &BTreeMap<String, String>) -> Req {
        let body = serde_json::json!({"metadata": {"annotations": pairs}});
        Req::patch(
            format!("/api/v1/namespaces/{}/pods/{pod}", self.namespace),
            "application/merge-patch+json",
            body.to_string().into_bytes(),
        )
    }

    /// Server-side apply of one ConfigMap, as `kubectl apply --server-side --force-conflicts`.
    pub fn req_apply_configmap(&self, name: &str, yaml: &str) -> Req {
        Req::patch(
            format!(
                "/api/v1/namespaces/{}/configmaps/{name}?fieldManager={FIELD_MANAGER}&force=true",
                self.namespace
            ),
            "application/apply-patch+yaml",
            yaml.as_bytes().to_vec(),
        )
    }

    /// Sets (or, with `None`, removes) the release ConfigMap's stage request, under a field
    /// manager of its own so the release's server-side apply never owns or drops it.
    pub fn req_stage_configmap(&self, name: &str, digest: Option<Digest>, nudge: &str) -> Req {
        // The nudge changes on every request: asking again is an event even when the stage
        // request itself is unchanged.
        let body = serde_json::json!({"data": {
            release::STAGE: digest.map(|d| d.to_string()),
            release::NUDGE: nudge,
        }});
        Req::patch(
            format!(
                "/api/v1/namespaces/{}/configmaps/{name}?fieldManager={FIELD_MANAGER}-stage",
                self.namespace
            ),
            "application/merge-patch+json",
            body.to_string().into_bytes(),
        )
    }

    pub fn req_fetcher_status(&self, pod: &str) -> Req {
        Req::get(format!(
            "/api/v1/namespaces/{}/pods/{pod}:{}/proxy/status",
            self.namespace,
            FetcherEnv::HTTP_PORT
        ))
    }

    /// The shortest of `n` GETs of the namespace's ConfigMaps through the proxy (started
    /// first): the floor of one API call on this cluster, for the bench.
    pub fn api_floor(&self, n: usize) -> Result<std::time::Duration> {
        let api = self.api()?;
        let path = format!("/api/v1/namespaces/{}/configmaps", self.namespace);
        let mut best = std::time::Duration::MAX;
        for _ in 0..n {
            let t = std::time::Instant::now();
            ok(api.send(Req::get(path.clone()))?, "listing configmaps")?;
            best = best.min(t.elapsed());
        }
        Ok(best)
    }

    /// Whether the namespace exists with the restricted Pod Security level enforced, so a
    /// deploy need not apply it. A user who may not read namespaces works in one an admin made
    /// for them: it exists, and its labels are the admin's to set.
    pub fn namespace_ready(&self) -> Result<bool> {
        let resp = self
            .api()?
            .send(Req::get(format!("/api/v1/namespaces/{}", self.namespace)))?;
        match resp.status {
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::FORBIDDEN => Ok(true),
            _ => {
                let ns: k8s_openapi::api::core::v1::Namespace =
                    serde_json::from_slice(&ok(resp, "reading the namespace")?.body)
                        .context("parsing a Namespace")?;
                Ok(ns
                    .metadata
                    .labels
                    .unwrap_or_default()
                    .get("pod-security.kubernetes.io/enforce")
                    .is_some_and(|l| l == "restricted"))
            }
        }
    }

    /// A Service, or `None` when it does not exist.
    pub fn service(&self, name: &str) -> Result<Option<k8s_openapi::api::core::v1::Service>> {
        let path = format!("/api/v1/namespaces/{}/services/{name}", self.namespace);
        let resp = self.api()?.send(Req::get(path))?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = ok(resp, &format!("reading service/{name}"))?;
        Ok(Some(
            serde_json::from_slice(&resp.body).context("parsing a Service")?,
        ))
    }

    /// The app's Deployment, ReplicaSets, pods and release ConfigMap, listed side by side.
    pub fn app_objects(&self, app: &str) -> Result<AppObjects> {
        let api = self.api()?;
        let mut items = Vec::new();
        for (resp, (_, res)) in api
            .send_all(self.req_app_objects(app))
            .into_iter()
            .zip(APP_LISTS)
        {
            let resp = ok(resp?, &format!("listing the app's {res}"))?;
            let list: List<serde_json::Value> = serde_json::from_slice(&resp.body)
                .with_context(|| format!("parsing the list of {res}"))?;
            let kind = kind_of(res);
            items.extend(list.items.into_iter().map(|mut i| {
                i["kind"] = kind.into();
                i
            }));
        }
        AppObjects::from_items(items, &aether_artifact::release::configmap_name(app))
    }

    /// Applies the release ConfigMap whose `resourceVersion` is set: a concurrent change since
    /// it was read is [`ApplyError::Conflict`], for the caller to re-read and retry.
    pub fn apply_configmap_conditional(&self, name: &str, yaml: &str) -> Result<(), ApplyError> {
        let resp = self.api()?.send(self.req_apply_configmap(name, yaml))?;
        match resp.status {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Err(ApplyError::Conflict(format!("configmap/{name}"))),
            _ => Err(ApplyError::Other(
                ok(resp, &format!("updating configmap/{name}")).unwrap_err(),
            )),
        }
    }

    /// Annotates the pods, all at once; one that was deleted meanwhile is skipped (its
    /// replacement starts from the release ConfigMap).
    pub fn annotate(&self, pods: &[&str], pairs: &BTreeMap<String, String>) -> Result<()> {
        if pods.is_empty() {
            return Ok(());
        }
        let reqs = pods.iter().map(|p| self.req_annotate(p, pairs)).collect();
        annotated(self.api()?.send_all(reqs).into_iter(), pods)
    }

    /// A cutover's stage request (`None` withdraws it): in the release ConfigMap and in the
    /// annotations of `pods`, all at once, with a new nudge so that asking again is a change.
    pub fn stage(&self, configmap: &str, digest: Option<Digest>, pods: &[&str]) -> Result<()> {
        let nudge = aether_artifact::unix_now_ms().to_string();
        let annotations: BTreeMap<String, String> = [
            (
                keys::STAGE.to_string(),
                digest.map(|d| d.to_string()).unwrap_or_default(),
            ),
            (keys::NUDGE.to_string(), nudge.clone()),
        ]
        .into_iter()
        .collect();
        let mut reqs = vec![self.req_stage_configmap(configmap, digest, &nudge)];
        reqs.extend(pods.iter().map(|p| self.req_annotate(p, &annotations)));
        let mut resps = self.api()?.send_all(reqs).into_iter();
        ok(
            resps.next().expect("one response per request")?,
            &format!("asking configmap/{configmap} to stage"),
        )?;
        annotated(resps, pods)
    }

    /// Every pod's fetcher status at once, through the API server's pod proxy. Where that is
    /// forbidden (no `pods/proxy` right), through `kubectl exec` as before.
    pub fn fetcher_statuses(&self, pods: &[String]) -> Vec<Result<aether_artifact::Status>> {
        let api = match self.api() {
            Ok(a) => a,
            Err(e) => return pods.iter().map(|_| Err(anyhow::anyhow!("{e:#}"))).collect(),
        };
        let reqs = pods.iter().map(|p| self.req_fetcher_status(p)).collect();
        let resps = api.send_all(reqs);
        if resps
            .iter()
            .any(|r| r.as_ref().is_ok_and(|r| r.status == StatusCode::FORBIDDEN))
        {
            return self.exec_fetcher_statuses(pods);
        }
        resps
            .into_iter()
            .zip(pods)
            .map(|(r, pod)| {
                let what = format!("reading the fetcher status of {pod}");
                let r = ok(r?, &what)?;
                serde_json::from_slice(&r.body).with_context(|| format!("{what}: parsing it"))
            })
            .collect()
    }
}

/// The answers to annotating `pods`: an error for any but a pod deleted meanwhile (its
/// replacement starts from the release ConfigMap).
fn annotated(resps: impl Iterator<Item = Result<Resp>>, pods: &[&str]) -> Result<()> {
    for (resp, pod) in resps.zip(pods) {
        let resp = resp?;
        if resp.status != StatusCode::NOT_FOUND {
            ok(resp, &format!("annotating pod {pod}"))?;
        }
    }
    Ok(())
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "deployments" => "Deployment",
        "replicasets" => "ReplicaSet",
        "pods" => "Pod",
        _ => "ConfigMap",
    }
}

/// A successful response, or an error quoting the API server with a hint.
fn ok(resp: Resp, what: &str) -> Result<Resp> {
    if resp.status.is_success() {
        return Ok(resp);
    }
    let msg = resp.message();
    bail!(
        "{what} failed: the API server said {}: {msg}\n{}",
        resp.status,
        super::hint(&format!("{} {msg}", resp.status))
    )
}

#[cfg(test)]
mod tests {
    use super::super::Flavor;
    use super::*;

    #[test]
    fn requests_as_data() {
        let sh = xshell::Shell::new().unwrap();
        let k = Kube::new(&sh, Flavor::Kube { context: None }, "team-a");
        let lists: Vec<String> = k
            .req_app_objects("demo")
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(
            lists,
            [
                "GET /apis/apps/v1/namespaces/team-a/deployments?labelSelector=aether.dev%2Fapp%3Ddemo",
                "GET /apis/apps/v1/namespaces/team-a/replicasets?labelSelector=aether.dev%2Fapp%3Ddemo",
                "GET /api/v1/namespaces/team-a/pods?labelSelector=aether.dev%2Fapp%3Ddemo",
                "GET /api/v1/namespaces/team-a/configmaps?labelSelector=aether.dev%2Fapp%3Ddemo",
            ]
        );
        let pairs: BTreeMap<String, String> = [("aether.dev/digest".to_string(), "ab".to_string())]
            .into_iter()
            .collect();
        let a = k.req_annotate("demo-1", &pairs);
        assert_eq!(a.path, "/api/v1/namespaces/team-a/pods/demo-1");
        assert_eq!(
            a.body.unwrap(),
            (
                "application/merge-patch+json",
                br#"{"metadata":{"annotations":{"aether.dev/digest":"ab"}}}"#.to_vec()
            )
        );
        assert_eq!(
            k.req_apply_configmap("demo-release", "x").path,
            "/api/v1/namespaces/team-a/configmaps/demo-release?fieldManager=aether-dev&force=true"
        );
        let st = k.req_stage_configmap("demo-release", None, "7");
        assert_eq!(
            st.path,
            "/api/v1/namespaces/team-a/configmaps/demo-release?fieldManager=aether-dev-stage"
        );
        assert_eq!(
            st.body.unwrap().1,
            br#"{"data":{"nudge":"7","stage":null}}"#.to_vec()
        );
        assert_eq!(
            k.req_fetcher_status("demo-1").path,
            "/api/v1/namespaces/team-a/pods/demo-1:8081/proxy/status"
        );
    }
}
