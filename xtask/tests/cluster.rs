//! What only a recording `microk8s` shim can show here (MicroK8s itself cannot be installed on
//! these machines): `k8s-start`'s calls, and that a refused digest makes no cluster call at all.
//! Everything a real cluster can show (deploy, hot-patch, rollback, hot-status, no rollout,
//! replicas, Pod Security admission) is in `tests/kube/`, against a real API server.

mod common;
use common::*;

use std::fs;

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

#[test]
fn a_store_without_a_read_only_key_is_refused_before_any_upload() {
    let t = tempfile::tempdir().unwrap();
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let env = store_env(&server.endpoint(), SK);
    let shim = Shim::new();
    let app = t.path().join("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(
        app.join("server.js"),
        "require('http').createServer().listen(3000)\n",
    )
    .unwrap();
    let r = shim.run(
        t.path(),
        &env,
        &["deploy-sample", "demo", app.to_str().unwrap()],
    );
    assert_ne!(r.code, 0);
    for want in [
        "no read-only key for pods",
        "AETHER_S3_READ_ACCESS_KEY",
        "--allow-writer-credentials",
    ] {
        assert!(r.stderr.contains(want), "{want}: {}", r.stderr);
    }
    assert_eq!(server.requests("PUT") + server.requests("POST"), 0);
    assert!(
        shim.calls().iter().all(|c| !c.contains("apply")),
        "{:?}",
        shim.calls()
    );
}
