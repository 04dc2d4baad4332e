//! `package` and `hot-upload` through the real binary against a real S3 server.

mod common;
use common::*;

#[test]
fn package_prints_digest_last_and_matches_sha256sum() {
    let t = tempfile::tempdir().unwrap();
    let dir = app_dir(t.path(), "console.log(1)\n");
    let out = t.path().join("a.tar.gz");
    let r = package_to(t.path(), &dir, &out).ok();
    let digest = r
        .stdout
        .lines()
        .last()
        .unwrap()
        .strip_prefix("digest=")
        .unwrap()
        .to_string();
    let sum = std::process::Command::new("sha256sum")
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8(sum.stdout).unwrap().starts_with(&digest));
    // Without -o the digest is the same.
    let r2 = xtask(t.path(), &[], &["package", dir.to_str().unwrap()]).ok();
    assert_eq!(r2.last("digest"), digest);
}

#[test]
fn upload_dedupe_json_and_no_secret_in_output() {
    let t = tempfile::tempdir().unwrap();
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let env = store_env(&server.endpoint(), SK);
    let dir = app_dir(t.path(), "console.log('v1')\n");
    let d = dir.to_str().unwrap();

    let first = xtask(t.path(), &as_refs(&env), &["hot-upload", "demo", d]).ok();
    let digest = first.last("digest");
    assert_eq!(digest.len(), 64);
    assert!(
        first.stdout.contains(&format!(
            "s3=s3://xtask-test/artifacts/demo/{digest}/app.tar.gz"
        )),
        "{}",
        first.stdout
    );
    let url = first
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("url="))
        .unwrap()
        .to_string();
    assert!(
        first.stderr.contains("uploaded") && first.stderr.contains("valid for 3600 s"),
        "{}",
        first.stderr
    );
    // The presigned URL serves exactly the packaged bytes.
    let body = curl_get(&url);
    let pkg = xtask(t.path(), &[], &["package", d]).ok();
    assert_eq!(pkg.last("digest"), digest);
    assert_eq!(sha256_hex(&body), digest);

    let puts = server.requests("PUT");
    let second = xtask(
        t.path(),
        &as_refs(&env),
        &["hot-upload", "demo", d, "--json"],
    )
    .ok();
    assert_eq!(
        server.requests("PUT"),
        puts,
        "re-uploading unchanged code sent a PUT"
    );
    let v: serde_json::Value = serde_json::from_str(second.stdout.trim()).unwrap();
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(v["uploaded"], false);
    assert_eq!(second.stdout.trim().lines().count(), 1);
    for r in [&first, &second] {
        assert!(!r.all().contains(SK), "secret in output");
    }
}

#[test]
fn clear_errors_for_bad_secret_server_down_and_bad_input() {
    let t = tempfile::tempdir().unwrap();
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let dir = app_dir(t.path(), "x");
    let d = dir.to_str().unwrap();
    let wrong = store_env(&server.endpoint(), "the-wrong-secret");
    let r = xtask(t.path(), &as_refs(&wrong), &["hot-upload", "demo", d]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("rejected the credentials") && r.stderr.contains(&server.endpoint()),
        "{}",
        r.stderr
    );
    assert!(!r.all().contains("the-wrong-secret"));

    let endpoint = server.endpoint();
    drop(server);
    let env = store_env(&endpoint, SK);
    let r = xtask(t.path(), &as_refs(&env), &["hot-upload", "demo", d]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("is the store running") && r.stderr.contains(&endpoint),
        "{}",
        r.stderr
    );
    assert!(!r.all().contains(SK));

    let r = xtask(t.path(), &as_refs(&env), &["hot-upload", "Bad_Name", d]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("DNS-1123"), "{}", r.stderr);
    let r = xtask(
        t.path(),
        &as_refs(&env),
        &["hot-upload", "demo", "/no/such/dir"],
    );
    assert_ne!(r.code, 0);
    // Each part of the message once: the path, then the cause.
    assert_eq!(
        r.stderr.trim(),
        "error: /no/such/dir: No such file or directory (os error 2)"
    );
    let r = xtask(t.path(), &as_refs(&env), &["package", "/etc/passwd"]);
    assert_ne!(r.code, 0);
    assert_eq!(
        r.stderr.trim(),
        "error: cannot pack /etc/passwd: it is not a directory; pass the directory that holds the app"
    );
    // Refused before any store is started or contacted (the endpoint here is down).
    let r = xtask(
        t.path(),
        &as_refs(&env),
        &["deploy-sample", "demo", "/etc/passwd"],
    );
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.matches("/etc/passwd").count(), 1, "{}", r.stderr);
    assert!(!r.stderr.contains("store"), "{}", r.stderr);
}

fn curl_get(url: &str) -> Vec<u8> {
    // The xtask has no HTTP client of its own in tests; curl is on every machine here.
    let out = std::process::Command::new("curl")
        .args(["-sSf", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The dependency layer without a lockfile (keyed by its own digest, with a warning, packed
/// on every upload), native addons flagged, a missing node_modules warned about, and an app
/// that cannot say how it starts refused.
#[test]
fn dependency_layers_without_a_lockfile_native_addons_and_bad_entry_points() {
    let t = tempfile::tempdir().unwrap();
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let env = store_env(&server.endpoint(), SK);
    let env = as_refs(&env);
    let dir = t.path().join("app");
    std::fs::create_dir_all(dir.join("node_modules/addon/build/Release")).unwrap();
    std::fs::write(
        dir.join("node_modules/addon/index.js"),
        "module.exports = 1;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("node_modules/addon/build/Release/addon.node"),
        b"\x7fELF",
    )
    .unwrap();
    std::fs::write(
        dir.join("package.json"),
        r#"{"main": "app.js", "dependencies": {"addon": "1"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("app.js"), "require('addon');\n").unwrap();
    let d = dir.to_str().unwrap();
    let up = |what: &str| {
        let r = xtask(t.path(), &env, &["hot-upload", "demo", d, "--json"]).ok();
        let v: serde_json::Value =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {}", r.stdout));
        (v, r.stderr)
    };
    let (first, err) = up("first");
    assert!(err.contains("has no lockfile"), "{err}");
    assert_eq!(first["entry"], "app.js");
    assert_eq!(first["deps"]["source"], "node_modules");
    assert_eq!(first["deps"]["native"], true);
    assert_eq!(first["deps"]["key"], first["deps"]["digest"]);
    assert_eq!(first["deps"]["uploaded"], true);
    let (again, _) = up("again");
    assert_eq!(again["deps"]["digest"], first["deps"]["digest"]);
    assert_eq!(again["deps"]["uploaded"], false);

    // No node_modules although package.json lists dependencies: uploaded, with a warning.
    std::fs::remove_dir_all(dir.join("node_modules")).unwrap();
    let (bare, err) = up("without node_modules");
    assert!(err.contains("run `npm ci`"), "{err}");
    assert!(bare["deps"].is_null(), "{bare}");

    // No way to start: refused before packing, naming what to add.
    std::fs::write(dir.join("package.json"), r#"{"name": "x"}"#).unwrap();
    let r = xtask(t.path(), &env, &["hot-upload", "demo", d]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("cannot tell how to start the app"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("add \"main\": \"<file>\""),
        "{}",
        r.stderr
    );
}
