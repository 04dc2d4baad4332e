//! The cluster targets against a recording `kubectl`/`microk8s` shim (no API server can run
//! here) and a real S3 server: the exact calls, and that a hot reload never touches the
//! Deployment.

mod common;
use common::*;

use std::fs;
use std::path::Path;

const K: &str = "microk8s kubectl -n aether-system";

fn upload(project: &Path, env: &[(&'static str, String)], body: &str) -> String {
    let dir = project.join(format!("src-{}", body.len()));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("server.js"), body).unwrap();
    xtask(
        project,
        &as_refs(env),
        &["hot-upload", "demo", dir.to_str().unwrap()],
    )
    .ok()
    .last("digest")
}

/// No call may create, change or restart a Deployment during a hot reload.
fn assert_no_rollout(shim: &Shim) {
    for c in shim.calls() {
        let lc = c.to_lowercase();
        assert!(
            !(lc.contains("deployment")
                || lc.contains("rollout")
                || lc.contains(" patch ")
                || lc.contains(" replace ")
                || lc.contains(" edit ")),
            "call touches a Deployment: {c}"
        );
    }
    for s in shim.stdins() {
        assert!(
            !s.contains("kind: Deployment"),
            "a Deployment was applied:\n{s}"
        );
        assert!(!s.contains("template:"), "a pod template was sent:\n{s}");
    }
}

#[test]
fn hot_patch_updates_configmap_then_annotates_every_pod_and_never_the_deployment() {
    let t = tempfile::tempdir().unwrap();
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let env = store_env(&server.endpoint(), SK);
    let old = upload(t.path(), &env, "v1");
    let new = upload(t.path(), &env, "v2 longer");
    let shim = Shim::new();
    shim.configmap(&old, 3, &[]);

    let r = shim.run(t.path(), &env, &["hot-patch", "demo", &new]).ok();
    assert_eq!(r.last("generation"), "4");
    assert!(
        r.stderr
            .contains("signalled 2 pod(s) of demo: demo-7c9d8f6b5-x2x4k, demo-7c9d8f6b5-q8zzp"),
        "{}",
        r.stderr
    );
    let calls = shim.calls();
    assert_eq!(
        calls,
        vec![
            format!("{K} get configmap demo-release -o json"),
            format!("{K} apply -f -"),
            format!("{K} get pods -l aether.dev/app=demo -o json"),
            format!("{K} annotate pod demo-7c9d8f6b5-x2x4k aether.dev/digest={new} aether.dev/generation=4 --overwrite"),
            format!("{K} annotate pod demo-7c9d8f6b5-q8zzp aether.dev/digest={new} aether.dev/generation=4 --overwrite"),
        ]
    );
    let applied = shim.stdins();
    assert_eq!(applied.len(), 1);
    assert!(
        applied[0].contains("kind: ConfigMap")
            && applied[0].contains(&format!("digest: \"{new}\"")),
        "{}",
        applied[0]
    );
    assert!(
        applied[0].contains("generation: \"4\"")
            && applied[0].contains(&format!("history: \"{old}\"")),
        "{}",
        applied[0]
    );
    assert_no_rollout(&shim);
    assert!(!r.all().contains(SK));
}

#[test]
fn rollback_goes_to_history_as_a_new_generation() {
    let t = tempfile::tempdir().unwrap();
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let env = store_env(&server.endpoint(), SK);
    let old = upload(t.path(), &env, "v1");
    let cur = upload(t.path(), &env, "v2 longer");
    let shim = Shim::new();
    shim.configmap(&cur, 8, &[&old]);
    let r = shim.run(t.path(), &env, &["rollback", "demo"]).ok();
    assert_eq!(
        (r.last("digest"), r.last("generation")),
        (old.clone(), "9".to_string())
    );
    let applied = shim.stdins();
    assert!(
        applied[0].contains(&format!("digest: \"{old}\""))
            && applied[0].contains(&format!("history: \"{cur}\"")),
        "{}",
        applied[0]
    );
    assert!(shim.calls().iter().any(|c| c.ends_with(&format!("annotate pod demo-7c9d8f6b5-x2x4k aether.dev/digest={old} aether.dev/generation=9 --overwrite"))));
    assert_no_rollout(&shim);
}

#[test]
fn unknown_digest_is_refused_before_any_cluster_call() {
    let t = tempfile::tempdir().unwrap();
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let env = store_env(&server.endpoint(), SK);
    let shim = Shim::new();
    shim.configmap(&"a".repeat(64), 1, &[]);
    let r = shim.run(t.path(), &env, &["hot-patch", "demo", &"f".repeat(64)]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not in the store"), "{}", r.stderr);
    assert!(shim.calls().is_empty(), "{:?}", shim.calls());
}

#[test]
fn deploy_sample_imports_the_image_applies_on_stdin_and_waits() {
    let t = tempfile::tempdir().unwrap();
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let mut env = store_env(&server.endpoint(), SK);
    let shim = Shim::new();
    fs::write(
        shim.dir.join("images.txt"),
        "docker.io/library/node:20-alpine\n",
    )
    .unwrap();
    let archive = t.path().join("fetcher-image.tar");
    fs::write(&archive, b"oci archive").unwrap();
    env.push((
        "AETHER_FETCHER_IMAGE_ARCHIVE",
        archive.display().to_string(),
    ));
    let r = shim.run(t.path(), &env, &["deploy-sample", "demo"]).ok();
    assert_eq!(r.last("url"), "http://127.0.0.1:31234/");
    let digest = r.last("digest");
    let calls = shim.calls();
    assert_eq!(calls[0], "microk8s ctr image ls -q");
    assert_eq!(
        calls[1],
        format!("microk8s ctr image import {}", archive.display())
    );
    assert_eq!(calls[2], format!("{K} get configmap demo-release -o json"));
    assert_eq!(calls[3], format!("{K} apply -f -"));
    assert!(
        calls.contains(&format!(
            "{K} wait --for=condition=Ready pod -l aether.dev/app=demo --timeout=60s"
        )),
        "{calls:?}"
    );
    // Every manifest, the Secret with its credentials included, arrived on stdin; no credential
    // is on any command line.
    let all = &shim.stdins()[0];
    for kind in ["Namespace", "Secret", "ConfigMap", "Deployment", "Service"] {
        assert!(all.contains(&format!("kind: {kind}")), "{kind} missing");
    }
    assert!(all.contains(&format!("AETHER_S3_SECRET_KEY: \"{SK}\"")));
    assert!(all.contains(&format!("digest: \"{digest}\"")));
    for c in &calls {
        assert!(
            !c.contains(SK) && !c.contains(AK),
            "credential on a command line: {c}"
        );
    }
    assert!(!r.all().contains(SK));
}

#[test]
fn deploy_timeout_prints_a_diagnosis_and_fails() {
    let t = tempfile::tempdir().unwrap();
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let env = store_env(&server.endpoint(), SK);
    let shim = Shim::new();
    fs::write(shim.dir.join("wait-fails"), "").unwrap();
    let r = shim.run(t.path(), &env, &["deploy-sample", "demo", "--timeout", "5"]);
    assert_ne!(r.code, 0);
    for want in [
        "timed out",
        "pod demo-7c9d8f6b5-q8zzp: Pending",
        "waiting: ImagePullBackOff",
        "fetcher log:",
        "is the store running?",
    ] {
        assert!(
            r.stderr.contains(want),
            "{want:?} missing from:\n{}",
            r.stderr
        );
    }
    assert!(shim.calls().iter().any(|c| c.contains("--timeout=5s")));
}

#[test]
fn hot_status_reads_each_fetcher() {
    let t = tempfile::tempdir().unwrap();
    let shim = Shim::new();
    let d = "d".repeat(64);
    shim.configmap(&d, 5, &[]);
    fs::write(shim.dir.join("status.json"), format!(r#"{{"app":"demo","digest":"{d}","generation":5,"fetched_at":"2026-11-27T10:00:00.000Z","last_error":null,"consecutive_failures":0,"ready":true}}"#)).unwrap();
    let r = shim.run(t.path(), &[], &["hot-status", "demo"]).ok();
    assert!(
        r.stdout
            .contains(&format!("app demo: wants {d} generation 5")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("demo-7c9d8f6b5-x2x4k: live") && r.stdout.contains("(in sync)"),
        "{}",
        r.stdout
    );
    assert!(shim.calls().contains(&format!(
        "{K} exec demo-7c9d8f6b5-x2x4k -c aether-fetcher -- aether-fetcher status"
    )));
}

#[test]
fn k8s_start_is_idempotent() {
    let t = tempfile::tempdir().unwrap();
    let shim = Shim::new();
    let r = shim.run(t.path(), &[], &["k8s-start"]).ok();
    assert!(r.stderr.contains("nothing to change"), "{}", r.stderr);
    assert!(
        shim.calls()
            .iter()
            .all(|c| !c.contains(" enable ") && !c.contains("apply")),
        "{:?}",
        shim.calls()
    );

    let shim = Shim::new();
    fs::write(shim.dir.join("disabled-dns"), "").unwrap();
    fs::remove_file(shim.dir.join("namespace-aether-system.json")).unwrap();
    let r = shim.run(t.path(), &[], &["k8s-start"]).ok();
    assert!(
        r.stderr
            .contains("enabled dns, created namespace aether-system"),
        "{}",
        r.stderr
    );
    let calls = shim.calls();
    assert_eq!(calls[0], "microk8s status --wait-ready --timeout 120");
    assert!(calls.contains(&"microk8s enable dns".to_string()));
    assert!(!calls.contains(&"microk8s enable hostpath-storage".to_string()));
    assert!(shim.stdins()[0].contains("kind: Namespace"));
}

#[test]
fn render_prints_valid_manifests_without_credentials() {
    let t = tempfile::tempdir().unwrap();
    let r = xtask(
        t.path(),
        &[("AETHER_S3_SECRET_KEY", SK)],
        &["render", "demo", "--digest", &"b".repeat(64)],
    )
    .ok();
    assert!(r.stdout.contains("kind: Deployment") && r.stdout.contains("REPLACE_ME"));
    assert!(!r.stdout.contains(SK));
}
