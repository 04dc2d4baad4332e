//! The seed's acceptance on the local target, end to end: the real xtask, the real fetcher,
//! a real S3 server (the embedded s3s store), real files and a real `node`.

mod common;
use common::*;

use std::fs;
use std::path::Path;
use std::time::Duration;

use aether_artifact::store::{PartialStore, Secret, Store};
use aether_artifact::{object_key, AppName, Digest};

fn pod(project: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(project.join(".aether/local/demo/pod.json")).unwrap()).unwrap()
}

fn local_store(project: &Path) -> Store {
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(project.join(".aether/local/store.json")).unwrap())
            .unwrap();
    Store::new(
        PartialStore {
            endpoint: Some(format!("http://127.0.0.1:{}", st["port"])),
            access_key: Some(st["access_key"].as_str().unwrap().into()),
            secret_key: Some(Secret::new(st["secret_key"].as_str().unwrap())),
            ..Default::default()
        }
        .finish()
        .unwrap(),
    )
    .unwrap()
}

fn group_pids(pgid: u64) -> Vec<u64> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u64 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let rest = stat.rsplit_once(") ")?.1.to_string();
            let f: Vec<&str> = rest.split(' ').collect();
            (f[2] == pgid.to_string() && f[0] != "Z").then_some(pid)
        })
        .collect()
}

/// Stops whatever the test started even when an assertion fails half-way.
struct Down<'a>(&'a Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        xtask(self.0, &[("AETHER_TARGET", "local")], &["down", "demo"]);
    }
}

#[test]
fn deploy_edit_hot_patch_rollback_and_down() {
    if !node_available() {
        // `cargo xtask test` installs node; this only happens under a bare `cargo test`.
        return skip("node is not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    // A real Postgres: the sample answers a query through it.
    if !aether_testkit::require(
        aether_testkit::postgres::bin_dir().is_some(),
        "Postgres is not installed",
    ) {
        return;
    }
    let db = aether_testkit::postgres::Postgres::start();
    let db_url = db.url();
    let env = [
        ("AETHER_TARGET", "local"),
        ("AETHER_DATABASE_URL", db_url.as_str()),
    ];
    let _down = Down(p);

    // D1: deploy-sample generates the sample, uploads, starts the pod, and the app answers.
    let d1 = xtask(p, &env, &["deploy-sample", "demo"]).ok();
    let url = d1.last("url");
    let v1 = d1.last("digest");
    assert!(
        d1.stderr.contains("generated the sample app"),
        "{}",
        d1.stderr
    );
    let body = get(&url);
    assert!(
        body.contains("version: v1") && body.contains("database: ok"),
        "{body}"
    );
    let fetcher_pid = pod(p)["fetcher_pid"].as_u64().unwrap();

    // Running it again is harmless: same digest, same pod, no new generation.
    let again = xtask(p, &env, &["deploy-sample", "demo"]).ok();
    assert_eq!(again.last("digest"), v1);
    assert!(
        again.stderr.contains("already the wanted version")
            && again.stderr.contains("already running"),
        "{}",
        again.stderr
    );
    assert_eq!(pod(p)["fetcher_pid"].as_u64().unwrap(), fetcher_pid);

    // D2: edit → hot-upload → hot-patch → the fetcher logs `new digest`, the app serves v2,
    // and the fetcher kept its PID (the "pod" was not restarted).
    let sample = p.join("examples/sample-node/server.js");
    fs::write(
        &sample,
        fs::read_to_string(&sample)
            .unwrap()
            .replace("const VERSION = 'v1'", "const VERSION = 'v2'"),
    )
    .unwrap();
    let up = xtask(
        p,
        &env,
        &[
            "hot-upload",
            "demo",
            p.join("examples/sample-node").to_str().unwrap(),
        ],
    )
    .ok();
    let v2 = up.last("digest");
    assert_ne!(v2, v1);
    let patch = xtask(p, &env, &["hot-patch", "demo", &v2, "--wait", "30"]).ok();
    assert_eq!(patch.last("generation"), "2");
    assert!(get(&url).contains("version: v2"), "{}", get(&url));
    // The fetcher logs the line after it saved the status `--wait` read: wait for it.
    let line = format!("[fetcher] new digest {v2} generation 2 in ");
    wait_until("the fetcher's new-digest line", PATIENCE, || {
        let flog = xtask(p, &env, &["logs", "demo", "--fetcher"]).ok().stdout;
        if flog.contains(&line) {
            Ok(())
        } else {
            Err(flog)
        }
    });
    assert_eq!(pod(p)["fetcher_pid"].as_u64().unwrap(), fetcher_pid);
    assert!(group_pids(fetcher_pid).contains(&fetcher_pid));

    // hot-status reports desired and live.
    let st = xtask(p, &env, &["hot-status", "demo", "--json"]).ok();
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["desired"]["digest"], v2.as_str());
    assert_eq!(st["pods"][0]["digest"], v2.as_str());

    // Rollback: back to v1 as a new generation.
    let rb = xtask(p, &env, &["rollback", "demo", "--wait", "30"]).ok();
    assert_eq!(
        (rb.last("digest"), rb.last("generation")),
        (v1.clone(), "3".to_string())
    );
    assert!(get(&url).contains("version: v1"));

    // An unknown digest is refused before anything changes.
    let unknown = "0".repeat(64);
    let r = xtask(p, &env, &["hot-patch", "demo", &unknown]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("not in the store") && r.stderr.contains("hot-upload"),
        "{}",
        r.stderr
    );
    let st: serde_json::Value = serde_json::from_str(
        &xtask(p, &env, &["hot-status", "demo", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(st["desired"]["generation"], 3);

    // Ten patches at once, to ten versions, queue on the release lock: each gets its own
    // generation, 4..=13 with none lost or repeated, and the release ends as the last one wrote.
    let versions: Vec<String> = (0..10)
        .map(|i| {
            let dir = p.join(format!("variant{i}"));
            fs::create_dir_all(&dir).unwrap();
            fs::copy(&sample, dir.join("server.js")).unwrap();
            fs::write(dir.join("variant.txt"), i.to_string()).unwrap();
            let (bytes, packed) = aether_artifact::pack::pack_to_vec(&dir).unwrap();
            local_store(p)
                .put_bytes(
                    &object_key(&AppName::parse("demo").unwrap(), &packed.digest),
                    &bytes,
                )
                .unwrap();
            packed.digest.to_string()
        })
        .collect();
    let children: Vec<_> = versions
        .iter()
        .map(|d| {
            let p = p.to_path_buf();
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let d = d.clone();
            std::thread::spawn(move || {
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let r = xtask(&p, &env, &["hot-patch", "demo", &d]).ok();
                (r.last("generation").parse::<u64>().unwrap(), d)
            })
        })
        .collect();
    let mut got: Vec<(u64, String)> = children.into_iter().map(|c| c.join().unwrap()).collect();
    got.sort();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (4..=13).collect::<Vec<_>>(),
        "{got:?}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&xtask(p, &env, &["hot-status", "demo", "--json"]).stdout).unwrap();
    assert_eq!(st["desired"]["generation"], 13);
    assert_eq!(st["desired"]["digest"], got[9].1.as_str());
    // Back to a known state for what follows.
    xtask(p, &env, &["hot-patch", "demo", &v1, "--wait", "30"]).ok();

    // A corrupt artifact (bytes that do not match their key) never replaces the running version.
    let store = local_store(p);
    let fake = Digest::parse(&"c".repeat(64)).unwrap();
    store
        .put_bytes(
            &object_key(&AppName::parse("demo").unwrap(), &fake),
            b"not an artifact",
        )
        .unwrap();
    xtask(p, &env, &["hot-patch", "demo", &fake.to_string()]).ok();
    let st = wait_until(
        "the fetcher to report the corrupt artifact",
        PATIENCE,
        || {
            // Out of sync, so hot-status exits 1 here; its JSON is printed all the same.
            let st: serde_json::Value =
                serde_json::from_str(&xtask(p, &env, &["hot-status", "demo", "--json"]).stdout)
                    .unwrap();
            // Refused as corrupt (not a gzip) before the digest is even complete.
            let refused = st["pods"][0]["last_error"].as_str().is_some_and(|e| {
                e.contains(&format!("verifying {}", fake.short())) && e.contains("corrupt")
            });
            if refused {
                Ok(st)
            } else {
                Err(st)
            }
        },
    );
    assert_eq!(st["pods"][0]["last_error_cause"], "archive_refused", "{st}");
    let body = get(&url);
    assert!(
        body.contains("version: v1"),
        "still serving the last good version: {body:?}\n{}",
        xtask(p, &env, &["logs", "demo"]).all()
    );
    let human = xtask(p, &env, &["hot-status", "demo"]);
    assert_ne!(
        human.code, 0,
        "hot-status must fail while a pod is out of sync"
    );
    assert!(
        human.stdout.contains("NOT in sync")
            && human.stderr.contains("do not serve")
            && human.stderr.contains("corrupt"),
        "{}",
        human.all()
    );

    // A pod whose fetcher died is replaced whole by the next deploy (the old node would
    // otherwise keep the port).
    let old_pgid = pod(p)["pgid"].as_u64().unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &fetcher_pid.to_string()])
        .status()
        .unwrap()
        .success());
    // SIGKILL is delivered when the scheduler gets to it: wait until the fetcher is gone.
    wait_until("the killed fetcher to be gone", PATIENCE, || {
        let left = group_pids(old_pgid);
        if left.contains(&fetcher_pid) {
            Err(left)
        } else {
            Ok(())
        }
    });
    let redeploy = xtask(p, &env, &["deploy-sample", "demo"]).ok();
    assert!(
        redeploy.stderr.contains("lost its fetcher"),
        "{}",
        redeploy.stderr
    );
    assert!(
        group_pids(old_pgid).is_empty(),
        "old processes left: {:?}",
        group_pids(old_pgid)
    );
    assert_ne!(pod(p)["fetcher_pid"].as_u64().unwrap(), fetcher_pid);
    assert!(
        get(&redeploy.last("url")).contains("version: v2"),
        "the sample was edited to v2 earlier"
    );

    // down leaves no process behind.
    let pgid = pod(p)["pgid"].as_u64().unwrap();
    assert!(!group_pids(pgid).is_empty());
    xtask(p, &env, &["down", "demo"]).ok();
    assert!(
        group_pids(pgid).is_empty(),
        "processes left: {:?}",
        group_pids(pgid)
    );
    assert!(!p.join(".aether/local/demo/pod.json").exists());
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(p.join(".aether/local/store.json")).unwrap()).unwrap();
    assert!(
        st["pid"].is_null(),
        "the embedded store was stopped with the last app"
    );
    // No secret in anything the user sees.
    let secret = st["secret_key"].as_str().unwrap().to_string();
    for out in [&d1, &patch, &rb] {
        assert!(!out.all().contains(&secret));
    }
    assert!(
        !fs::read_to_string(p.join(".aether/local/demo/logs/fetcher.log"))
            .unwrap()
            .contains(&secret)
    );
}

#[test]
fn dev_watch_mode_reloads_on_save() {
    if !node_available() {
        return skip("node is not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let _down = Down(p);
    let url = xtask(p, &[("AETHER_TARGET", "local")], &["deploy-sample", "demo"])
        .ok()
        .last("url");
    let mut dev = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["dev", "demo"])
        .env("AETHER_PROJECT_DIR", p)
        .env("AETHER_TARGET", "local")
        .env("AETHER_APP_PORT", "0")
        .env_remove("AETHER_S3_ENDPOINT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = dev.stdout.take().unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    aether_testkit::capture(dev.stderr.take().unwrap(), stderr.clone());
    // The cycle line comes after the app already answers with the edit: read it on a thread
    // and wait for it before stopping `dev`, or the kill can race the print.
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = line_tx.send(l);
        }
    });
    // `dev` says "watching" once its watch is in place: an edit before that could be missed.
    wait_for(
        "dev to watch the app",
        PATIENCE,
        || stderr.lock().unwrap().contains("watching "),
        || stderr.lock().unwrap().clone(),
    );
    let sample = p.join("examples/sample-node/server.js");
    fs::write(
        &sample,
        fs::read_to_string(&sample)
            .unwrap()
            .replace("const VERSION = 'v1'", "const VERSION = 'watched'"),
    )
    .unwrap();
    wait_for(
        "the saved edit to be served",
        PATIENCE,
        || get(&url).contains("version: watched"),
        || stderr.lock().unwrap().clone(),
    );
    let line = line_rx.recv_timeout(PATIENCE);
    // One save, one cycle: the cycle's own reads of the files are not edits. (A window that
    // observes an absence; it orders nothing.)
    let another = line_rx.recv_timeout(Duration::from_millis(1500)); // window: no second cycle
    let _ = dev.kill();
    let _ = dev.wait();
    assert!(another.is_err(), "a cycle without an edit: {another:?}");
    let line = line.expect("dev printed no cycle line");
    // The cycle's trace: the command's stages, then the pod's own, then the first answer.
    for stage in [
        "debounce",
        "pack",
        "upload",
        "signal",
        "seen",
        "swap",
        "app ready",
        "first response",
    ] {
        assert!(line.contains(&format!("{stage} ")), "{stage}: {line}");
    }
    assert!(
        line.starts_with("trace ") && line.contains("0 of "),
        "{line}"
    );
}

/// The two-phase cutover on the local pod (`--barrier`; on a cluster it is the default with
/// more than one pod): the release is staged and only goes live at the activation time, the
/// trace names every stage, and a release the pod cannot stage is called off with nothing
/// switched, the stage request withdrawn and the fleet healthy again.
#[test]
fn a_cutover_stages_first_and_a_release_a_pod_cannot_get_goes_nowhere() {
    if !node_available() {
        return skip("node is not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let env = [("AETHER_TARGET", "local")];
    let _down = Down(p);
    let d1 = xtask(p, &env, &["deploy-sample", "demo"]).ok();
    let url = d1.last("url");
    let sample = p.join("examples/sample-node/server.js");
    fs::write(
        &sample,
        fs::read_to_string(&sample)
            .unwrap()
            .replace("const VERSION = 'v1'", "const VERSION = 'staged'"),
    )
    .unwrap();
    let dir = p.join("examples/sample-node");
    let v2 = xtask(p, &env, &["hot-upload", "demo", dir.to_str().unwrap()])
        .ok()
        .last("digest");
    let r = xtask(
        p,
        &env,
        &[
            "hot-patch",
            "demo",
            &v2,
            "--barrier",
            "--wait",
            "30",
            "--json",
        ],
    )
    .ok();
    assert!(get(&url).contains("version: staged"));
    let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(out["barrier"], true, "{out}");
    let stages: Vec<&str> = out["trace"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "stage signal",
            "seen",
            "download",
            "verify+extract",
            "activation signal",
            "until activation",
            "swap",
            "app ready",
            "first response"
        ],
        "{out}"
    );
    assert_eq!(out["trace"]["failed_requests"], 0, "{out}");
    assert!(
        r.stderr.contains("staging ") && r.stderr.contains("trace "),
        "{}",
        r.stderr
    );
    // It went live at the activation time, not before.
    let st: serde_json::Value = serde_json::from_str(
        &xtask(p, &env, &["hot-status", "demo", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    let pod0 = &st["pods"][0];
    let at = pod0["activate_at_ms"].as_u64().expect("an activation time");
    assert!(pod0["published_at_ms"].as_u64().unwrap() >= at, "{pod0}");
    assert!(
        pod0["runner"]["switched_at_ms"].as_u64().unwrap() >= at,
        "{pod0}"
    );
    assert_eq!(pod0["fetch"]["digest"], v2.as_str());
    assert_eq!(st["fleet"]["in_sync"], true, "{st}");
    let generation = st["desired"]["generation"].as_u64().unwrap();

    // A release the pod cannot stage (its bytes are not an artifact): called off, nothing
    // published, the old release served throughout.
    let fake = Digest::parse(&"c".repeat(64)).unwrap();
    local_store(p)
        .put_bytes(
            &object_key(&AppName::parse("demo").unwrap(), &fake),
            b"not an artifact",
        )
        .unwrap();
    let r = xtask(
        p,
        &env,
        &[
            "hot-patch",
            "demo",
            &fake.to_string(),
            "--barrier",
            "--wait",
            "30",
        ],
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("called off")
            && r.stderr.contains("local-")
            && r.stderr.contains("archive_refused")
            && r.stderr.contains("no pod switched"),
        "{}",
        r.stderr
    );
    assert!(get(&url).contains("version: staged"));
    let annotations = fs::read_to_string(p.join(".aether/local/demo/podinfo/annotations")).unwrap();
    assert!(
        annotations.contains("aether.dev/stage=\"\"\n"),
        "the stage request is withdrawn: {annotations}"
    );
    let healthy = wait_until("hot-status healthy again", PATIENCE, || {
        let h = xtask(p, &env, &["hot-status", "demo", "--json"]);
        if h.code == 0 {
            Ok(h)
        } else {
            Err(h.all())
        }
    });
    let st: serde_json::Value = serde_json::from_str(&healthy.stdout).unwrap();
    assert_eq!(
        st["desired"]["generation"].as_u64().unwrap(),
        generation,
        "nothing published"
    );
    assert_eq!(st["pods"][0]["digest"], v2.as_str());
    assert_eq!(st["pods"][0]["last_error"], serde_json::Value::Null, "{st}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn json(r: &common::Run) -> serde_json::Value {
    serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{}\n{}", r.stdout, r.stderr))
}

/// Issue 16 end to end on the local target: keygen, signed uploads with provenance that matches
/// the git state and verifies with the stock `minisign` tool, a fetcher that requires the
/// signature (an unsigned release is refused, the signed one keeps serving), `hot-status` and
/// `rollback --to` showing provenance, and `--json` from every CI command.
#[test]
fn signed_uploads_provenance_and_json_for_ci() {
    if !node_available() {
        return skip("node is not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let _down = Down(p);
    // A source tree in git, as in a CI checkout.
    let src = p.join("repo/app");
    fs::create_dir_all(&src).unwrap();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/sample-node");
    for f in ["server.js", "db.js"] {
        fs::copy(format!("{sample}/{f}"), src.join(f)).unwrap();
    }
    git(&p.join("repo"), &["init", "-q"]);
    git(&p.join("repo"), &["add", "."]);
    git(&p.join("repo"), &["commit", "-qm", "v1"]);
    let head = git(&p.join("repo"), &["rev-parse", "HEAD"]);

    let kg = xtask(p, &[], &["keygen", "--json"]).ok();
    let keys = json(&kg);
    let sk_file = keys["secret_key_file"].as_str().unwrap().to_string();
    let pk_file = keys["public_key_file"].as_str().unwrap().to_string();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs::metadata(&sk_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret_line = fs::read_to_string(&sk_file)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(
        !kg.all().contains(&secret_line),
        "the secret key was printed"
    );
    assert_ne!(
        xtask(p, &[], &["keygen"]).code,
        0,
        "an existing key is never overwritten"
    );

    let s = src.to_str().unwrap();
    let signed = [
        ("AETHER_TARGET", "local"),
        ("AETHER_SIGNING_KEY", sk_file.as_str()),
        ("AETHER_VERIFY_KEY", pk_file.as_str()),
    ];
    let pkg = json(&xtask(p, &signed, &["package", s, "--json"]).ok());
    let d1 = xtask(p, &signed, &["deploy-sample", "demo", s])
        .ok()
        .last("digest");
    assert_eq!(pkg["digest"], d1.as_str());
    let url = format!("http://127.0.0.1:{}/", pod(p)["app_port"]);

    // The pod says it verifies, with the key id of the `.pub` file's comment; a deploy from a
    // shell without the verify key is refused rather than turning verification off.
    let key_id = fs::read_to_string(&pk_file)
        .unwrap()
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_string();
    let st = xtask(p, &signed, &["hot-status", "demo"]).ok();
    assert!(
        st.stdout
            .contains(&format!("signatures: required (key {key_id})")),
        "{}",
        st.stdout
    );
    let unkeyed = [
        ("AETHER_TARGET", "local"),
        ("AETHER_SIGNING_KEY", sk_file.as_str()),
    ];
    let r = xtask(p, &unkeyed, &["deploy-sample", "demo", s]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("signature verification")
            && r.stderr.contains(&key_id)
            && r.stderr.contains("--allow-unsigned"),
        "{}",
        r.stderr
    );

    // The record beside the artifact, signed, matching git, verifiable by minisign itself.
    let store = local_store(p);
    let app = AppName::parse("demo").unwrap();
    let dg = Digest::parse(&d1).unwrap();
    let mut rec = Vec::new();
    store
        .get_to_writer(&aether_artifact::provenance::key(&app, &dg), &mut rec)
        .unwrap();
    let prov: serde_json::Value = serde_json::from_slice(&rec).unwrap();
    assert_eq!(prov["digest"], d1.as_str());
    assert_eq!(prov["source"]["git"]["commit"], head.as_str());
    assert_eq!(prov["source"]["git"]["dirty"], false);
    assert_eq!(prov["source"]["dir"], "app");
    let mut sig = Vec::new();
    store
        .get_to_writer(
            &aether_artifact::provenance::signature_key(&app, &dg),
            &mut sig,
        )
        .unwrap();
    fs::write(p.join("provenance.json"), &rec).unwrap();
    fs::write(p.join("provenance.json.minisig"), &sig).unwrap();
    let v = std::process::Command::new("minisign")
        .args(["-V", "-q", "-p", &pk_file, "-m"])
        .arg(p.join("provenance.json"))
        .output();
    match v {
        Ok(o) => assert!(
            o.status.success(),
            "minisign -V: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => skip("minisign is not installed"),
    }

    // An edit, uncommitted: signed upload, provenance says dirty; patched with --json.
    let js = src.join("server.js");
    fs::write(
        &js,
        fs::read_to_string(&js)
            .unwrap()
            .replace("const VERSION = 'v1'", "const VERSION = 'v2'"),
    )
    .unwrap();
    let up = json(&xtask(p, &signed, &["hot-upload", "demo", s, "--json"]).ok());
    let d2 = up["digest"].as_str().unwrap().to_string();
    assert!(up["provenance"]["signature"]
        .as_str()
        .unwrap()
        .ends_with(".minisig"));
    let hp = json(
        &xtask(
            p,
            &signed,
            &["hot-patch", "demo", &d2, "--wait", "30", "--json"],
        )
        .ok(),
    );
    assert_eq!(
        (hp["changed"].as_bool(), hp["generation"].as_u64()),
        (Some(true), Some(2))
    );
    assert!(get(&url).contains("version: v2"));
    let st = json(&xtask(p, &signed, &["hot-status", "demo", "--json"]).ok());
    assert_eq!(st["provenance"]["digest"], d2.as_str());
    assert_eq!(st["provenance"]["source"]["git"]["dirty"], true);
    assert!(xtask(p, &signed, &["hot-status", "demo"])
        .ok()
        .stdout
        .contains("(dirty)"));

    // Unsigned (no signing key): the fetcher refuses it; v2 keeps serving.
    fs::write(
        &js,
        fs::read_to_string(&js).unwrap().replace("'v2'", "'v3'"),
    )
    .unwrap();
    let verify_only = [
        ("AETHER_TARGET", "local"),
        ("AETHER_VERIFY_KEY", pk_file.as_str()),
    ];
    let up3 = json(&xtask(p, &verify_only, &["hot-upload", "demo", s, "--json"]).ok());
    assert!(up3["provenance"]["signature"].is_null());
    let d3 = up3["digest"].as_str().unwrap().to_string();
    xtask(p, &verify_only, &["hot-patch", "demo", &d3, "--json"]).ok();
    let refused = wait_until(
        "the fetcher to refuse the unsigned release",
        PATIENCE,
        || {
            let r = xtask(p, &verify_only, &["hot-status", "demo", "--json"]);
            let st = json(&r);
            if st["pods"][0]["last_error_cause"] == "bad_signature" {
                assert_ne!(r.code, 0, "out of sync must exit 1");
                Ok(st)
            } else {
                Err(st)
            }
        },
    );
    assert!(
        refused["pods"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not signed")),
        "{refused}"
    );
    assert!(
        get(&url).contains("version: v2"),
        "the signed release keeps serving"
    );

    // rollback --to alone lists the releases with provenance; --json everywhere.
    let list = json(&xtask(p, &signed, &["rollback", "demo", "--to", "--json"]).ok());
    let releases = list["releases"].as_array().unwrap();
    assert_eq!(releases[0]["digest"], d3.as_str());
    assert!(releases.iter().any(|r| r["digest"] == d1.as_str()
        && r["provenance"]["source"]["git"]["commit"] == head.as_str()));
    let human = xtask(p, &signed, &["rollback", "demo", "--to"]).ok();
    assert!(human.stdout.contains(&head[..12]), "{}", human.stdout);
    let rb = json(
        &xtask(
            p,
            &signed,
            &["rollback", "demo", "--to", &d1, "--wait", "30", "--json"],
        )
        .ok(),
    );
    assert_eq!(rb["digest"], d1.as_str());
    assert!(get(&url).contains("version: v1"));
    let r = json(
        &xtask(
            p,
            &[
                ("AETHER_TARGET", "kube"),
                ("AETHER_VERIFY_KEY", pk_file.as_str()),
            ],
            &["render", "demo", "--digest", &d1, "--json"],
        )
        .ok(),
    );
    assert!(r["objects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "Deployment/demo"));
    assert!(r["yaml"]
        .as_str()
        .unwrap()
        .contains("AETHER_FETCHER_PUBLIC_KEY"));
}

/// The local pod starts from what a container would have, not from the shell that ran the
/// CLI: the app never sees the signing key, the store's credentials or the shell's other
/// variables (only those named in `AETHER_APP_ENV`), the fetcher gets its store settings but
/// not the signing key, and `.aether/` (keys, the store's data) is the owner's alone.
#[test]
fn the_local_pod_gets_a_container_environment_not_the_shell() {
    if !node_available() {
        return skip("node is not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let _down = Down(p);
    let keys = json(&xtask(p, &[], &["keygen", "--json"]).ok());
    let sk = keys["secret_key_file"].as_str().unwrap().to_string();
    let dir = app_dir(
        p,
        "require('http').createServer((q, r) => r.end(JSON.stringify(process.env)))\n  .listen(process.env.PORT);\n",
    );
    // Without the control plane: the pod's own read key is what this test checks.
    let env = [
        ("AETHER_TARGET", "local"),
        ("AETHER_CONTROL", "off"),
        ("AETHER_SIGNING_KEY", sk.as_str()),
        ("SHELL_SECRET", "canary"),
        ("FORWARDED", "yes"),
        ("AETHER_APP_ENV", "FORWARDED"),
    ];
    let deployed = xtask(p, &env, &["deploy-sample", "demo", dir.to_str().unwrap()]).ok();
    assert!(
        deployed
            .stderr
            .contains("pods read the store with a read-only key for this app alone"),
        "{}",
        deployed.stderr
    );
    let url = deployed.last("url");
    let seen: serde_json::Value = serde_json::from_str(&get(&url)).unwrap();
    for k in [
        "AETHER_SIGNING_KEY",
        "SHELL_SECRET",
        "AETHER_S3_SECRET_KEY",
        "AETHER_S3_ACCESS_KEY",
    ] {
        assert!(seen.get(k).is_none(), "the app sees {k}: {seen}");
    }
    assert_eq!(seen["FORWARDED"], "yes", "{seen}");
    assert!(
        seen["PORT"].is_string() && seen["PATH"].is_string(),
        "{seen}"
    );
    let fetcher = pod(p)["fetcher_pid"].as_u64().unwrap();
    let environ = fs::read(format!("/proc/{fetcher}/environ")).unwrap();
    let names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| kv.split(|b| *b == b'=').next())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "AETHER_S3_SECRET_KEY"),
        "{names:?}"
    );
    for k in ["AETHER_SIGNING_KEY", "SHELL_SECRET", "FORWARDED"] {
        assert!(
            !names.iter().any(|n| n == k),
            "the fetcher has {k}: {names:?}"
        );
    }
    pod_key_reads_only_its_app(p, &environ, &deployed.last("digest"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(p.join(".aether"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

/// The fetcher's store key (from its environment) reads its own app's artifact, and is refused
/// a PUT anywhere and a GET of another app's object; the uploader's key is not the pod's.
fn pod_key_reads_only_its_app(p: &Path, environ: &[u8], digest: &str) {
    let lookup = |name: &str| {
        environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(format!("{name}=").as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let var = |name: &str| lookup(name).unwrap_or_else(|| panic!("the fetcher has no {name}"));
    let owner = local_store(p);
    assert_eq!(var("AETHER_S3_ACCESS_KEY"), "aether-read-demo");
    assert_ne!(
        var("AETHER_S3_SECRET_KEY"),
        owner.config().secret_key.expose()
    );
    let pod = store_from(lookup);
    let demo = AppName::parse("demo").unwrap();
    let own = object_key(&demo, &digest.parse::<Digest>().unwrap());
    let mut buf = Vec::new();
    pod.get_to_writer(&own, &mut buf).unwrap();
    assert_eq!(Some(buf.len() as u64), owner.size(&own).unwrap());

    let other = object_key(
        &AppName::parse("other").unwrap(),
        &"c".repeat(64).parse().unwrap(),
    );
    owner.put_bytes(&other, b"another app's bytes").unwrap();
    let e = pod.get_to_writer(&other, &mut Vec::new()).unwrap_err();
    assert_eq!(e.kind, aether_artifact::store::ErrorKind::Forbidden, "{e}");
    let e = pod.put_bytes(&own, b"overwritten").unwrap_err();
    assert_eq!(e.kind, aether_artifact::store::ErrorKind::Forbidden, "{e}");
    let e = pod
        .put_bytes("artifacts/demo/new/app.tar.gz", b"x")
        .unwrap_err();
    assert_eq!(e.kind, aether_artifact::store::ErrorKind::Forbidden, "{e}");
    let mut after = Vec::new();
    owner.get_to_writer(&own, &mut after).unwrap();
    assert_eq!(after, buf, "the refused PUT changed nothing");
}

/// The committed express example, installed from the registry with `npm ci`: it starts from
/// its package.json, its node_modules travel as their own layer, an edit uploads only the app,
/// a lockfile change uploads a new layer, and a tampered layer is refused with the old release
/// still served.
#[test]
fn an_express_app_ships_node_modules_as_its_own_layer() {
    if !node_available() || !npm_available() {
        return skip("node and npm are not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let dir = p.join("shop");
    fs::create_dir_all(&dir).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/express");
    for f in ["package.json", "package-lock.json", "index.js"] {
        fs::copy(example.join(f), dir.join(f)).unwrap();
    }
    npm(&dir, &["ci"]);
    let env = [("AETHER_TARGET", "local")];
    let _down = DownApp(p, "shop");
    let dir_s = dir.to_str().unwrap();

    let d = xtask(p, &env, &["deploy-sample", "shop", dir_s]).ok();
    let url = d.last("url");
    assert_eq!(get(&url), "hello from express\n");
    assert!(
        d.stderr.contains("dependency layer") && d.stderr.contains("(package-lock.json): uploaded"),
        "{}",
        d.stderr
    );
    let up = |what: &str| -> serde_json::Value {
        let r = xtask(p, &env, &["hot-upload", "shop", dir_s, "--json"]).ok();
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {}", r.stdout))
    };
    let first = up("again");
    let deps1 = first["deps"]["digest"].as_str().unwrap().to_string();
    assert_eq!(first["entry"], "index.js");
    assert_eq!(first["node_major"], 20);

    // A one-line edit: the app layer only; the dependency layer is found by its lockfile.
    let index = dir.join("index.js");
    let text = fs::read_to_string(&index).unwrap();
    fs::write(&index, text.replace("hello from express", "hello again")).unwrap();
    let edit = up("edit");
    assert_eq!(edit["deps"]["uploaded"], false, "{edit}");
    assert_eq!(edit["deps"]["digest"], deps1.as_str());
    assert!(edit["bytes"].as_u64().unwrap() < 64 << 10, "{edit}");
    let v2 = edit["digest"].as_str().unwrap();
    xtask(p, &env, &["hot-patch", "shop", v2, "--wait", "30"]).ok();
    assert_eq!(get(&url), "hello again\n");
    let st: serde_json::Value = serde_json::from_str(
        &xtask(p, &env, &["hot-status", "shop", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(st["pods"][0]["deps_digest"], deps1.as_str(), "{st}");

    // A lockfile change: a new layer is packed and uploaded.
    npm(&dir, &["install", "ms@2.1.3"]);
    fs::write(
        &index,
        fs::read_to_string(&index)
            .unwrap()
            .replace("'hello again'", "`hello in ${require('ms')(60000)}`"),
    )
    .unwrap();
    let changed = up("lockfile change");
    assert_eq!(changed["deps"]["uploaded"], true, "{changed}");
    let deps2 = changed["deps"]["digest"].as_str().unwrap().to_string();
    assert_ne!(deps2, deps1);

    // Tampered in the store before it is fetched: refused, and the old release keeps serving.
    let obj = walk(&p.join(".aether/local/s3"))
        .into_iter()
        .find(|f| f.to_string_lossy().contains(&deps2) && f.ends_with("node_modules.tar.gz"))
        .expect("the new layer on the embedded store's disk");
    let mut bytes = fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&obj, bytes).unwrap();
    let v3 = changed["digest"].as_str().unwrap();
    let r = xtask(p, &env, &["hot-patch", "shop", v3, "--wait", "10"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("dependency layer"), "{}", r.stderr);
    assert_eq!(get(&url), "hello again\n");
}
