//! The real-cluster suite: every cluster command against whatever Kubernetes `KUBECONFIG`
//! names (`../shared/k8s-local` in CI, MicroK8s or kind on a laptop), checked the way a user
//! checks it: curl the app, read the pods, their UIDs, restarts and ReplicaSets.
//!
//! Run with `cargo xtask test --cluster` (it builds the fetcher image and passes
//! `AETHER_IMAGE_IMPORT` when `../shared/k8s-local` is there). The tests are `#[ignore]`d so a
//! plain `cargo test` on a machine without a cluster does not fail on them; `--cluster` runs
//! exactly these. Each test uses a namespace of its own and deletes it at the end.

#[path = "../common/mod.rs"]
mod common;
use common::*;

mod access;
mod follow;
mod inspect;
mod page;
mod platform;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One test's namespace and project directory; the namespace is deleted on drop.
struct Ns {
    name: String,
    project: tempfile::TempDir,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("aether-t-{tag}-{}", std::process::id());
        Ns {
            name,
            project: tempfile::tempdir().unwrap(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("AETHER_NAMESPACE", self.name.clone()),
            (
                "AETHER_TARGET",
                std::env::var("AETHER_TEST_TARGET").unwrap_or_else(|_| "kube".into()),
            ),
        ];
        for k in [
            "KUBECONFIG",
            "AETHER_IMAGE_IMPORT",
            "AETHER_FETCHER_IMAGE_ARCHIVE",
        ] {
            if let Ok(x) = std::env::var(k) {
                v.push((k, x));
            }
        }
        v
    }

    /// `xtask <args>` in this test's project and namespace, not started yet.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args)
            .env("AETHER_PROJECT_DIR", self.project.path())
            .env_remove("AETHER_S3_ENDPOINT");
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c
    }

    fn x(&self, args: &[&str]) -> Run {
        run(self.command(args))
    }

    /// The Deployment's `.metadata.generation`: a rollout changes it, a hot reload never does.
    fn deployment_generation(&self) -> String {
        self.k(&[
            "get",
            "deployment",
            "demo",
            "-o",
            "jsonpath={.metadata.generation}",
        ])
        .ok()
        .stdout
    }

    fn k(&self, args: &[&str]) -> Run {
        let mut c = Command::new("kubectl");
        c.arg("-n").arg(&self.name).args(args);
        run(c)
    }

    fn app(&self, version: &str) -> std::path::PathBuf {
        let d = self.project.path().join(format!("src-{version}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("server.js"),
            format!(
                // No SIGTERM handler, like most apps: stopping it is aether-run's job.
                "const http = require('http');\n\
                 http.createServer((q, r) => r.end('version: {version}\\n')).listen(process.env.PORT || 3000);\n"
            ),
        )
        .unwrap();
        d
    }

    /// `deploy-sample` of the app at version v1; its URL.
    fn deploy_v1(&self) -> String {
        self.x(&["deploy-sample", "demo", self.app("v1").to_str().unwrap()])
            .ok()
            .last("url")
    }

    fn upload(&self, version: &str) -> String {
        let d = self.app(version);
        self.x(&["hot-upload", "demo", d.to_str().unwrap()])
            .ok()
            .last("digest")
    }

    /// `(pod name, uid, restarts of every container)` of the app's live pods, sorted.
    fn pods(&self) -> Vec<(String, String, i64)> {
        let out = self
            .k(&["get", "pods", "-l", "aether.dev/app=demo", "-o", "json"])
            .ok();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let mut pods: Vec<(String, String, i64)> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let restarts = ["initContainerStatuses", "containerStatuses"]
                    .iter()
                    .flat_map(|k| p["status"][k].as_array().cloned().unwrap_or_default())
                    .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                    .sum();
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                    restarts,
                )
            })
            .collect();
        pods.sort();
        pods
    }

    /// What a rollout would change: ReplicaSets, the Deployment's generation, pods and restarts.
    fn shape(&self) -> String {
        let rs = self
            .k(&["get", "rs", "-l", "aether.dev/app=demo", "-o", "name"])
            .ok()
            .stdout;
        let generation = self.deployment_generation();
        format!(
            "rs={} generation={generation} pods={:?}",
            rs.trim(),
            self.pods()
        )
    }

    /// The body each pod serves, read from inside the cluster through the pod IPs would need a
    /// client image; the NodePort is what a user curls, so that is what is checked.
    fn wait_body(&self, url: &str, want: &str, timeout: Duration) -> String {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(&format!("{url} to serve {want:?}"), timeout, || {
                let body = get(url).unwrap_or_default();
                if body.contains(want) {
                    Ok(body)
                } else {
                    Err(body)
                }
            })
        }));
        r.unwrap_or_else(|e| {
            panic!(
                "{}\n{}",
                e.downcast_ref::<String>().map_or("", |s| s.as_str()),
                self.x(&["hot-status", "demo"]).all()
            )
        })
    }

    /// Polls `hot-status` (with `args`) until `ok` holds for its output; returns that run.
    fn wait_status(&self, what: &str, args: &[&str], ok: impl Fn(&Run) -> bool) -> Run {
        let mut full = vec!["hot-status", "demo"];
        full.extend_from_slice(args);
        wait_until(what, PATIENCE * 2, || {
            let st = self.x(&full);
            if ok(&st) {
                Ok(st)
            } else {
                Err(st.all())
            }
        })
    }

    /// Waits for the fetcher log of the app's pods to contain `line` (the fetcher logs a pass
    /// after it saved the status that `--wait` and `hot-status` read).
    fn wait_fetcher_log(&self, line: &str) -> String {
        wait_until(&format!("{line:?} in the fetcher log"), PATIENCE, || {
            let logs = self.x(&["logs", "demo", "--fetcher"]).ok().stdout;
            if logs.contains(line) {
                Ok(logs)
            } else {
                Err(logs)
            }
        })
    }
}

impl Ns {
    /// Firewalls what `pod` sends to this test's embedded store (`jump`: the iptables target
    /// and its options) until the rule is dropped. Returns the rule and the store's port.
    fn cut_off_store(&self, pod: &str, jump: &[&str]) -> (DropRule, String) {
        let ip = self
            .k(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
            .ok()
            .stdout;
        let store: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.project.path().join(".aether/local/store.json")).unwrap(),
        )
        .unwrap();
        let port = store["port"].as_u64().unwrap().to_string();
        let mut spec: Vec<String> = [
            "INPUT",
            "-s",
            ip.trim(),
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
        ]
        .map(String::from)
        .to_vec();
        spec.extend(jump.iter().map(|j| j.to_string()));
        (DropRule::insert(&spec), port)
    }
}

impl Ns {
    /// The only store key in the namespace is the app's read-only one: it reads the app's
    /// artifact, and is refused a PUT and another app's object (asked where pods ask).
    fn pod_key_reads_only_its_app(&self, digest: &str) {
        use aether_artifact::store::ErrorKind;
        let secrets = self.k(&["get", "secrets", "-o", "json"]).ok().stdout;
        let v: serde_json::Value = serde_json::from_str(&secrets).unwrap();
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{secrets}");
        assert_eq!(items[0]["metadata"]["name"], "demo-store");
        let t =
            r#"go-template={{range $k, $v := .data}}{{$k}}={{$v | base64decode}}{{"\n"}}{{end}}"#;
        let data = self
            .k(&["get", "secret", "demo-store", "-o", t])
            .ok()
            .stdout;
        let lookup = |k: &str| {
            data.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
        };
        let var = |k: &str| lookup(k).unwrap_or_default();
        assert_eq!(var("AETHER_S3_ACCESS_KEY"), "aether-read-demo");
        let owner: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.project.path().join(".aether/local/store.json")).unwrap(),
        )
        .unwrap();
        assert_ne!(owner["secret_key"], var("AETHER_S3_SECRET_KEY").as_str());
        let pod = store_from(lookup);
        let own = format!("artifacts/demo/{digest}/app.tar.gz");
        pod.get_to_writer(&own, &mut Vec::new()).unwrap();
        let e = pod.put_bytes(&own, b"overwritten").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden, "{e}");
        let other = format!("artifacts/other/{digest}/app.tar.gz");
        let e = pod.get_to_writer(&other, &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden, "{e}");
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        // The embedded store this test's project started (a process group of its own).
        if let Ok(b) = std::fs::read(self.project.path().join(".aether/local/store.json")) {
            let st: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            if let Some(pid) = st["pid"].as_i64() {
                let _ = Command::new("kill")
                    .args(["--", &format!("-{pid}")])
                    .output();
            }
        }
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

fn run(mut c: Command) -> Run {
    let o = c.output().expect("running a command");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn deploy_patch_rollback_without_a_rollout() {
    let ns = Ns::new("loop");
    let v1 = ns.app("v1");
    // D1: the pod runs and the app answers.
    let d = ns.x(&["deploy-sample", "demo", v1.to_str().unwrap()]).ok();
    let url = d.last("url");
    let d1 = d.last("digest");
    assert!(get(&url).unwrap().contains("version: v1"));
    let before = ns.shape();
    assert_eq!(ns.pods().len(), 1, "{before}");

    // D2: a hot patch is logged by the fetcher and served, and nothing rolls out.
    let d2 = ns.upload("v2");
    let p = ns.x(&["hot-patch", "demo", &d2]).ok();
    assert_eq!(p.last("generation"), "2");
    ns.wait_body(&url, "version: v2", Duration::from_secs(20));
    ns.wait_fetcher_log(&format!("[fetcher] new digest {d2}"));
    assert_eq!(ns.shape(), before, "hot-patch rolled something out");

    // Rollback: the previous digest as a new generation, again without a rollout.
    let r = ns.x(&["rollback", "demo", "--wait", "20"]).ok();
    assert_eq!(
        (r.last("digest"), r.last("generation")),
        (d1.clone(), "3".into())
    );
    ns.wait_body(&url, "version: v1", Duration::from_secs(20));
    assert_eq!(ns.shape(), before, "rollback rolled something out");

    // An unknown digest is refused and changes nothing.
    let bad = ns.x(&["hot-patch", "demo", &"f".repeat(64)]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("not in the store"), "{}", bad.stderr);
    let cm = ns
        .k(&[
            "get",
            "configmap",
            "demo-release",
            "-o",
            "jsonpath={.data.generation}",
        ])
        .ok();
    assert_eq!(cm.stdout, "3");

    // hot-status: in sync, exit 0, reading the fetcher inside the pod.
    let st = ns.x(&["hot-status", "demo"]).ok();
    assert!(st.stdout.contains("(in sync)"), "{}", st.stdout);

    // A corrupt artifact is never served: the pod keeps v1 and hot-status fails, naming the
    // pod and the cause.
    let d3 = ns.upload("v3");
    let obj = walk(&ns.project.path().join(".aether/local/s3"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&d3) && p.ends_with("app.tar.gz"))
        .expect("the v3 object on the embedded store's disk");
    std::fs::write(&obj, b"not a gzip stream").unwrap();
    ns.x(&["hot-patch", "demo", &d3]).ok();
    let st = ns.wait_status("the pod to report the corrupt artifact", &[], |st| {
        st.all().contains("last error")
    });
    assert_ne!(st.code, 0, "{}", st.all());
    assert!(st.stderr.contains("do not serve"), "{}", st.stderr);
    assert!(
        st.stdout.contains("last error (archive_refused)"),
        "{}",
        st.stdout
    );
    assert!(get(&url).unwrap().contains("version: v1"));
    assert_eq!(ns.shape(), before);
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn replicas_and_replacement_pods_serve_the_wanted_digest() {
    let ns = Ns::new("replicas");
    let url = ns.deploy_v1();
    ns.k(&["scale", "deployment/demo", "--replicas=2"]).ok();
    ns.k(&["rollout", "status", "deployment/demo", "--timeout=60s"])
        .ok();
    let d2 = ns.upload("v2");
    let p = ns.x(&["hot-patch", "demo", &d2, "--wait", "30"]).ok();
    assert!(p.stderr.contains("signalled 2 pod(s)"), "{}", p.stderr);
    // hot-status: both pods, both in sync.
    let st = ns.x(&["hot-status", "demo", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let pods = v["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 2, "{}", st.stdout);
    assert!(
        pods.iter().all(|p| p["digest"] == d2.as_str()),
        "{}",
        st.stdout
    );
    for _ in 0..10 {
        assert!(get(&url).unwrap().contains("version: v2"));
    }

    // The replacement of a deleted pod starts from the release ConfigMap: the latest digest.
    let victim = ns.pods()[0].0.clone();
    let t0 = Instant::now();
    ns.k(&["delete", "pod", &victim, "--wait=true"]).ok();
    let stop = t0.elapsed();
    // Before aether-run, node as PID 1 ignored SIGTERM and this took the full 30 s grace period.
    assert!(
        stop < Duration::from_secs(10),
        "deleting a pod took {stop:?}"
    );
    ns.k(&["rollout", "status", "deployment/demo", "--timeout=60s"])
        .ok();
    let pods = ns.pods();
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| p.0 != victim));
    ns.wait_status("the replacement pod in sync", &[], |st| st.code == 0);
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn deploy_down_deploy_and_a_prompt_stop() {
    let ns = Ns::new("redeploy");
    let src = ns.app("v1");
    let first = ns.x(&["deploy-sample", "demo", src.to_str().unwrap()]).ok();
    ns.pod_key_reads_only_its_app(&first.last("digest"));
    let old = ns.pods();
    ns.x(&["down", "demo"]).ok();
    let left = ns.k(&["get", "secrets", "-o", "name"]).ok().stdout;
    assert!(!left.contains("demo-store"), "down left {left}");
    // At once, while the old pod may still be terminating: the wait must only count the new
    // Deployment's pods, and the old pod must not be annotated.
    let again = ns
        .x(&[
            "deploy-sample",
            "demo",
            src.to_str().unwrap(),
            "--timeout",
            "60",
        ])
        .ok();
    assert!(get(&again.last("url")).unwrap().contains("version: v1"));
    let new = ns.pods();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_ne!(new[0].1, old[0].1, "the old pod survived down");
    // The pod stops within 2 s of SIGTERM (aether-run); measured through the API server, so
    // the bound here leaves room for kubectl and the kubelet's own polling.
    // Without aether-run the app (no SIGTERM handler) would hold the pod for the full 30 s
    // grace period; the bound tells the two apart with room for a busy machine.
    ns.x(&["down", "demo"]).ok();
    wait_for(
        "the pod to stop after down",
        Duration::from_secs(20),
        || {
            ns.k(&["get", "pods", "-l", "aether.dev/app=demo", "-o", "name"])
                .ok()
                .stdout
                .trim()
                .is_empty()
        },
        || ns.pods(),
    );
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn concurrent_hot_patches_get_unique_increasing_generations() {
    let ns = Ns::new("race");
    ns.x(&["deploy-sample", "demo", ns.app("v0").to_str().unwrap()])
        .ok();
    let digests: Vec<String> = (1..=10).map(|i| ns.upload(&format!("v{i}"))).collect();
    let env = ns.env();
    let children: Vec<_> = digests
        .iter()
        .map(|d| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
            c.args(["hot-patch", "demo", d])
                .env("AETHER_PROJECT_DIR", ns.project.path())
                .env_remove("AETHER_S3_ENDPOINT");
            for (k, v) in &env {
                c.env(k, v);
            }
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut gens: Vec<(u64, String)> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            let r = Run {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into(),
                stderr: String::from_utf8_lossy(&o.stderr).into(),
            }
            .ok();
            (r.last("generation").parse().unwrap(), r.last("digest"))
        })
        .collect();
    gens.sort();
    let numbers: Vec<u64> = gens.iter().map(|g| g.0).collect();
    assert_eq!(
        numbers,
        (2..=11).collect::<Vec<_>>(),
        "generations collided: {gens:?}"
    );
    let cm = ns
        .k(&[
            "get",
            "configmap",
            "demo-release",
            "-o",
            "jsonpath={.data.digest} {.data.generation}",
        ])
        .ok();
    let last = gens.last().unwrap();
    assert_eq!(cm.stdout, format!("{} {}", last.1, last.0));
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn restricted_pod_security_admits_every_pod_and_rejects_a_privileged_one() {
    let ns = Ns::new("pss");
    let render = |store: &str| {
        ns.x(&[
            "render",
            "demo",
            "--digest",
            &"a".repeat(64),
            "--platform",
            "--store",
            store,
        ])
        .ok()
        .stdout
    };
    let yaml = render("aether");
    // MinIO's objects too (the app's, rendered twice, are applied once below).
    let minio = render("minio");
    let minio = &minio[minio.find("# Object storage for artifacts: MinIO").unwrap()
        ..minio.find("# The database: Postgres").unwrap()];
    let docs_yaml = format!("{yaml}---\n{minio}");
    let docs: Vec<serde_json::Value> = docs_yaml
        .split("\n---\n")
        .flat_map(|d| d.split("---\n"))
        .filter(|d| d.contains("kind:"))
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    // The namespace (restricted enforced) first, from the rendered manifests themselves.
    let ns_doc = docs
        .iter()
        .find(|d| d["kind"] == "Namespace")
        .unwrap()
        .clone();
    let mut ns_doc = ns_doc;
    ns_doc["metadata"]["name"] = ns.name.clone().into();
    apply(&ns_doc, false).ok();
    // The pods run as their app's ServiceAccount, which admission looks up.
    for sa in docs.iter().filter(|d| d["kind"] == "ServiceAccount") {
        let mut sa = sa.clone();
        sa["metadata"]["namespace"] = ns.name.clone().into();
        apply(&sa, false).ok();
    }
    // Enforcement applies to Pods, not to Deployments: dry-run each workload's pod template as
    // a Pod, in that namespace, on the server.
    let mut pods = 0;
    for d in docs.iter().filter(|d| d["spec"]["template"].is_object()) {
        let mut pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("pss-{}", d["metadata"]["name"].as_str().unwrap()), "namespace": ns.name},
            "spec": d["spec"]["template"]["spec"].clone(),
        });
        // A StatefulSet's claim templates become volumes of its pods.
        for c in d["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = c["metadata"]["name"].clone();
            pod["spec"]["volumes"]
                .as_array_mut()
                .map(|v| v.push(serde_json::json!({"name": name, "persistentVolumeClaim": {"claimName": "x"}})))
                .unwrap_or_else(|| pod["spec"]["volumes"] = serde_json::json!([{"name": name, "persistentVolumeClaim": {"claimName": "x"}}]));
        }
        let ok = apply(&pod, true);
        assert_eq!(
            ok.code, 0,
            "{} was not admitted: {}",
            d["metadata"]["name"], ok.stderr
        );
        pods += 1;
        // The same pod with one container allowed to escalate privileges is refused.
        pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = true.into();
        let bad = apply(&pod, true);
        assert_ne!(bad.code, 0, "a privileged variant was admitted");
        assert!(
            bad.stderr.contains("violates PodSecurity"),
            "{}",
            bad.stderr
        );
    }
    assert_eq!(
        pods, 6,
        "app, our store, Postgres, the control plane, MinIO and its reader Job"
    );
    // The whole app, as rendered, is accepted by the API server too.
    let app_only: String = yaml.replace("aether-system", &ns.name);
    let mut c = Command::new("kubectl");
    c.args(["apply", "--dry-run=server", "-f", "-"]);
    let r = pipe(c, &app_only);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

fn apply(obj: &serde_json::Value, dry_run: bool) -> Run {
    let mut c = Command::new("kubectl");
    c.arg("apply");
    if dry_run {
        c.arg("--dry-run=server");
    }
    c.args(["-f", "-"]);
    pipe(c, &obj.to_string())
}

fn pipe(mut c: Command, input: &str) -> Run {
    use std::io::Write;
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

/// Removes an iptables rule when dropped, so a failed test leaves the host as it found it.
struct DropRule(Vec<String>);

impl DropRule {
    fn insert(spec: &[String]) -> DropRule {
        let ok = Command::new("iptables")
            .arg("-I")
            .args(spec)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "iptables -I {spec:?} failed");
        DropRule(spec.to_vec())
    }
}

impl Drop for DropRule {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(&self.0).status();
    }
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn a_pod_whose_store_traffic_is_dropped_says_so_and_recovers() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("iptables").arg("-V").output().is_err() {
        return skip("dropping a pod's traffic needs root and iptables");
    }
    let ns = Ns::new("drop");
    let url = ns.deploy_v1();
    let pod = ns.pods()[0].0.clone();
    let d2 = ns.upload("v2");
    // A firewall DROP (not a reset) of everything the pod sends to the store.
    let (rule, port) = ns.cut_off_store(&pod, &["DROP"]);
    let p = ns.x(&["hot-patch", "demo", &d2, "--wait", "15"]);
    assert_ne!(
        p.code, 0,
        "hot-patch --wait must fail while the pod cannot fetch"
    );
    assert!(
        p.stderr.contains(&pod) && p.stderr.contains("connect timeout"),
        "{}",
        p.stderr
    );
    let st = ns.x(&["hot-status", "demo"]);
    assert_ne!(st.code, 0);
    assert!(st.stdout.contains("retrying since"), "{}", st.stdout);
    assert!(
        st.stdout.contains("last error (store_unreachable)"),
        "{}",
        st.stdout
    );
    assert!(
        get(&url).unwrap().contains("version: v1"),
        "the old version keeps serving"
    );
    let logs = ns.wait_fetcher_log("failing since");
    assert!(logs.contains(&format!(":{port}")), "{logs}");
    // The network comes back: the next retry fetches, without a restart.
    drop(rule);
    ns.wait_body(&url, "version: v2", Duration::from_secs(60));
    assert_eq!(ns.pods()[0].2, 0, "no container restarted");
    ns.x(&["hot-status", "demo"]).ok();
}

/// Three replicas: a hot-patch stages the release on all three, then they switch at one
/// activation time (no pod before it, none dropping a request); when one replica cannot reach
/// the store, the cutover is called off naming it, and no replica switches; a pod started
/// meanwhile takes the live release. `--no-barrier` then switches the replicas that can.
#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn three_replicas_switch_together_or_not_at_all() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("iptables").arg("-V").output().is_err() {
        return skip("cutting one replica off the store needs root and iptables");
    }
    let ns = Ns::new("cutover");
    let url = ns
        .x(&[
            "deploy-sample",
            "demo",
            ns.app("v1").to_str().unwrap(),
            "--replicas",
            "3",
        ])
        .ok()
        .last("url");
    ns.wait_body(&url, "version: v1", Duration::from_secs(20));
    assert_eq!(ns.pods().len(), 3);
    let d2 = ns.upload("v2");
    let p = ns
        .x(&["hot-patch", "demo", &d2, "--wait", "60", "--json"])
        .ok();
    let out: serde_json::Value = serde_json::from_str(&p.stdout).unwrap();
    assert_eq!(out["barrier"], true, "{}", p.all());
    assert!(out["trace"]["spread_ms"].is_u64(), "{out}");
    assert_eq!(out["trace"]["failed_requests"], 0, "{out}");
    assert!(
        p.stderr.contains("staging ") && p.stderr.contains("replicas switched within"),
        "{}",
        p.stderr
    );
    let st: serde_json::Value =
        serde_json::from_str(&ns.x(&["hot-status", "demo", "--json"]).ok().stdout).unwrap();
    assert_eq!(st["fleet"]["in_sync"], true, "{st}");
    assert_eq!(st["fleet"]["serving_wanted"], 3, "{st}");
    for pod in st["pods"].as_array().unwrap() {
        let at = pod["activate_at_ms"].as_u64().expect("an activation time");
        assert!(pod["published_at_ms"].as_u64().unwrap() >= at, "{pod}");
        assert_eq!(pod["runner"]["digest"], d2.as_str());
    }
    let generation = st["desired"]["generation"].as_u64().unwrap();

    // One replica cannot reach the store: nobody switches, and the command says who and why.
    let victim = ns.pods()[0].0.clone();
    let d3 = ns.upload("v3");
    let (rule, _) = ns.cut_off_store(&victim, &["REJECT", "--reject-with", "tcp-reset"]);
    // A fourth pod starts while the pods are staging: it is not part of this cutover, and it
    // starts from the ConfigMap, i.e. the release that is live everywhere.
    let p = std::thread::scope(|sc| {
        let patch = sc.spawn(|| {
            ns.x(&[
                "hot-patch",
                "demo",
                &d3,
                "--wait",
                "60",
                "--stage-timeout",
                "10",
            ])
        });
        // Scaled up once the stage request is out (in the release ConfigMap, which the
        // pods' fetchers watch), i.e. while they stage.
        let stage = d3.clone();
        wait_for(
            "the stage request in the release ConfigMap",
            PATIENCE,
            || {
                ns.k(&[
                    "get",
                    "configmap",
                    "demo-release",
                    "-o",
                    "jsonpath={.data.stage}",
                ])
                .stdout
                .trim()
                    == stage
            },
            || {
                ns.k(&["get", "configmap", "demo-release", "-o", "yaml"])
                    .stdout
            },
        );
        ns.k(&["scale", "deployment/demo", "--replicas=4"]).ok();
        patch.join().unwrap()
    });
    assert_ne!(p.code, 0, "{}", p.all());
    assert!(p.stderr.contains("of 3 pod(s)"), "{}", p.stderr);
    ns.k(&["rollout", "status", "deployment/demo", "--timeout=60s"])
        .ok();
    assert_eq!(ns.pods().len(), 4);
    let before = ns.shape();
    assert!(
        p.stderr.contains("called off")
            && p.stderr.contains(&victim)
            && p.stderr.contains("store_unreachable")
            && p.stderr.contains("no pod switched"),
        "{}",
        p.stderr
    );
    let st: serde_json::Value =
        serde_json::from_str(&ns.x(&["hot-status", "demo", "--json"]).stdout).unwrap();
    assert_eq!(
        st["desired"]["generation"].as_u64().unwrap(),
        generation,
        "{st}"
    );
    for pod in st["pods"].as_array().unwrap() {
        assert_eq!(pod["runner"]["digest"], d2.as_str(), "{pod}");
    }
    for _ in 0..10 {
        assert!(get(&url).unwrap().contains("version: v2"));
    }
    // The replicas that had staged v3 drop it once the request is withdrawn.
    ns.wait_status("every pod to drop the staged release", &["--json"], |st| {
        serde_json::from_str::<serde_json::Value>(&st.stdout).is_ok_and(|st| {
            st["pods"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["staged"].is_null())
        })
    });

    // Without the barrier the two replicas that can switch do; the third is named as skew.
    let p = ns.x(&["hot-patch", "demo", &d3, "--no-barrier"]).ok();
    assert!(!p.stderr.contains("staging"), "{}", p.stderr);
    let skew = ns.wait_status("the skew of the cut-off replica", &[], |st| {
        st.stdout.contains("fleet: SKEW: 3 serve")
    });
    assert_ne!(skew.code, 0);
    assert!(
        skew.stdout.contains(&victim) && skew.stdout.contains("store_unreachable"),
        "{}",
        skew.stdout
    );
    drop(rule);
    ns.wait_status("the cut-off replica to catch up", &[], |st| st.code == 0);
    assert_eq!(
        ns.shape(),
        before,
        "a cutover restarted or rolled out something"
    );
}

/// One request on a fresh connection to `http://host:port/`, as a load client makes it: the
/// body on a 200, `None` on any failure (refused, reset, timeout, other status).
fn raw_get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let hostport = url.strip_prefix("http://")?.trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The issue's measure: a client requesting every 5 ms through the Service's NodePort while the
/// app is hot-patched, and a release that crashes on start, which must not take v-last down.
#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn hot_patches_drop_no_request_through_the_service() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let ns = Ns::new("nodrop");
    let url = ns.deploy_v1();
    ns.wait_body(&url, "version: v1", Duration::from_secs(20));
    let before = ns.shape();
    let digests: Vec<String> = (2..=6).map(|i| ns.upload(&format!("v{i}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let client = {
        let (url, stop, made) = (url.clone(), stop.clone(), made.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                match raw_get(&url) {
                    Some(_) => ok += 1,
                    None => failed += 1,
                }
                made.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5)); // pace: a request every 5 ms
            }
            (ok, failed)
        })
    };
    for (i, d) in digests.iter().enumerate() {
        ns.x(&["hot-patch", "demo", d, "--wait", "30"]).ok();
        ns.wait_body(
            &url,
            &format!("version: v{}", i + 2),
            Duration::from_secs(20),
        );
    }
    // Some requests after the last switch too.
    let after = made.load(Ordering::Relaxed) + 10;
    wait_for(
        "10 more requests after the last hot-patch",
        PATIENCE,
        || made.load(Ordering::Relaxed) >= after,
        || made.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during 5 hot-patches",
        ok + failed
    );
    assert!(ok > 50, "only {ok} requests were made");
    assert_eq!(
        ns.shape(),
        before,
        "a hot-patch restarted or rolled out something"
    );

    // A release that exits at start: hot-patch fails naming why, v6 keeps serving, and
    // hot-status shows the failure.
    let bad = ns.project.path().join("src-bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("server.js"),
        "console.error('missing config'); process.exit(4);\n",
    )
    .unwrap();
    let bd = ns
        .x(&["hot-upload", "demo", bad.to_str().unwrap()])
        .ok()
        .last("digest");
    let p = ns.x(&["hot-patch", "demo", &bd, "--wait", "30"]);
    assert_eq!(p.code, 1, "{}", p.all());
    assert!(
        p.stderr.contains("exited with status 4 before it listened"),
        "{}",
        p.stderr
    );
    assert!(get(&url).unwrap().contains("version: v6"));
    let st = ns.x(&["hot-status", "demo"]);
    assert_eq!(st.code, 1, "{}", st.all());
    assert!(
        st.stdout.contains("FAILED: the new process for"),
        "{}",
        st.stdout
    );
    assert_eq!(ns.shape(), before, "a failed start restarted the container");
}

/// Readiness means the app answers: a release that exits a second after every start keeps
/// `aether-run` restarting it in place, and the pod turns NotReady (a TCP probe on the port
/// aether-run holds passed through such a loop); back on a good release it is Ready again,
/// with no container restarted.
#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn a_crash_loop_makes_the_pod_not_ready() {
    let ns = Ns::new("ready");
    ns.deploy_v1();
    let before = ns.shape();
    let ready = || {
        ns.k(&[
            "get",
            "pods",
            "-l",
            "aether.dev/app=demo",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .stdout
    };
    wait_for("the pod Ready", PATIENCE, || ready() == "True", ready);
    let flaky = ns.project.path().join("src-flaky");
    std::fs::create_dir_all(&flaky).unwrap();
    std::fs::write(
        flaky.join("server.js"),
        "require('http').createServer((q, r) => r.end('flaky\\n')).listen(process.env.PORT || 3000);\n\
         setTimeout(() => process.exit(1), 1000);\n",
    )
    .unwrap();
    let bad = ns
        .x(&["hot-upload", "demo", flaky.to_str().unwrap()])
        .ok()
        .last("digest");
    ns.x(&["hot-patch", "demo", &bad]).ok();
    wait_for(
        "the pod NotReady while its app crash-loops",
        Duration::from_secs(120),
        || ready() == "False",
        || format!("{}\n{}", ready(), ns.x(&["hot-status", "demo"]).all()),
    );
    let v1 = ns.upload("v1");
    ns.x(&["hot-patch", "demo", &v1, "--wait", "60"]).ok();
    wait_for(
        "the pod Ready again",
        PATIENCE * 2,
        || ready() == "True",
        ready,
    );
    assert_eq!(ns.shape(), before, "the crash loop restarted a container");
}

/// The committed express example on the cluster: `npm ci` from the registry, deployed with its
/// node_modules as their own layer; an edit is served without that layer being uploaded again.
#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn an_express_app_and_its_dependency_layer() {
    let ns = Ns::new("express");
    let dir = ns.project.path().join("shop");
    std::fs::create_dir_all(&dir).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/express");
    for f in ["package.json", "package-lock.json", "index.js"] {
        std::fs::copy(example.join(f), dir.join(f)).unwrap();
    }
    npm(&dir, &["ci"]);
    let d = ns.x(&["deploy-sample", "demo", dir.to_str().unwrap()]).ok();
    let url = d.last("url");
    ns.wait_body(&url, "hello from express", Duration::from_secs(30));
    let before = ns.shape();
    let index = dir.join("index.js");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, text.replace("hello from express", "hello again")).unwrap();
    let up = ns
        .x(&["hot-upload", "demo", dir.to_str().unwrap(), "--json"])
        .ok();
    let up: serde_json::Value = serde_json::from_str(&up.stdout).unwrap();
    assert_eq!(up["deps"]["uploaded"], false, "{up}");
    ns.x(&[
        "hot-patch",
        "demo",
        up["digest"].as_str().unwrap(),
        "--wait",
        "30",
    ])
    .ok();
    ns.wait_body(&url, "hello again", Duration::from_secs(20));
    let st = ns.x(&["hot-status", "demo", "--json"]).ok();
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["pods"][0]["deps_digest"], up["deps"]["digest"], "{st}");
    assert_eq!(ns.shape(), before, "the edit rolled something out");
}

/// An app as a framework's build leaves it (issue 24), in a real pod (restricted, read-only
/// root): node flags and a variable from its start script, a file read relative to where it
/// starts, a hard-coded `listen(8080)` served on the pod's port; an edit swaps in without a
/// rollout.
#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn a_built_app_with_flags_on_a_fixed_port() {
    let ns = Ns::new("fixed");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fixed-port");
    let dir = ns.project.path().join("fixed");
    for f in ["package.json", "dist/main.js", "public/motd.txt"] {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        std::fs::copy(example.join(f), dir.join(f)).unwrap();
    }
    let d = ns.x(&["deploy-sample", "demo", dir.to_str().unwrap()]).ok();
    let url = d.last("url");
    ns.wait_body(
        &url,
        "v1 production welcome [--enable-source-maps --max-old-space-size=128]",
        Duration::from_secs(30),
    );
    let before = ns.shape();
    let main = dir.join("dist/main.js");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        text.replace("const VERSION = 'v1'", "const VERSION = 'v2'"),
    )
    .unwrap();
    let v2 = ns
        .x(&["hot-upload", "demo", dir.to_str().unwrap()])
        .ok()
        .last("digest");
    ns.x(&["hot-patch", "demo", &v2, "--wait", "30"]).ok();
    ns.wait_body(&url, "v2 production welcome", Duration::from_secs(20));
    assert_eq!(ns.shape(), before, "the edit rolled something out");
}
