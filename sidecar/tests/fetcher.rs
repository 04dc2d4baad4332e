//! The real `aether-fetcher` binary against a real S3 server (s3s-fs, SigV4 checked), with
//! volumes written exactly as the kubelet writes them.

use aether_testkit::{capture, free_port, is_root, require, wait_for, wait_until, PATIENCE};

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_artifact::pack::pack_to_vec;
use aether_artifact::podinfo::{format_annotations, write_atomic_volume};
use aether_artifact::store::{PartialStore, Secret, Store};
use aether_artifact::{object_key, AppName, Digest};
use aether_s3local::Server;

const AK: &str = "fetch-ak";
const SK: &str = "fetch-secret-never-logged";
const BUCKET: &str = "fetch-test";

struct Pod {
    t: tempfile::TempDir,
    server: Option<Server>,
    endpoint: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    http: u16,
}

impl Pod {
    fn new() -> Pod {
        let t = tempfile::tempdir().unwrap();
        let server = Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
        let endpoint = server.endpoint();
        // The kubelet creates both volume directories before any container starts.
        fs::create_dir_all(t.path().join("podinfo")).unwrap();
        fs::create_dir_all(t.path().join("release")).unwrap();
        let p = Pod {
            t,
            server: Some(server),
            endpoint,
            child: None,
            log: Arc::default(),
            http: free_port(),
        };
        p.store().ensure_bucket().unwrap();
        p
    }
    fn root(&self) -> PathBuf {
        self.t.path().join("work")
    }
    fn store(&self) -> Store {
        Store::new(
            PartialStore {
                endpoint: Some(self.endpoint.clone()),
                bucket: Some(BUCKET.into()),
                access_key: Some(AK.into()),
                secret_key: Some(Secret::new(SK)),
                ..Default::default()
            }
            .finish()
            .unwrap(),
        )
        .unwrap()
    }
    /// Packs a tree with `version.txt` and `check.txt` both holding `v`, uploads it, returns the digest.
    fn upload(&self, v: &str) -> Digest {
        let src = self.t.path().join(format!("src-{v}"));
        fs::create_dir_all(src.join("lib")).unwrap();
        fs::write(src.join("version.txt"), v).unwrap();
        fs::write(src.join("lib/check.txt"), v).unwrap();
        let (bytes, p) = pack_to_vec(&src).unwrap();
        self.store()
            .put_bytes(&object_key(&app(), &p.digest), &bytes)
            .unwrap();
        p.digest
    }
    fn annotate(&self, digest: &str, generation: u64) {
        let m: BTreeMap<String, String> = [
            ("aether.dev/app", "demo".to_string()),
            ("aether.dev/digest", digest.to_string()),
            ("aether.dev/generation", generation.to_string()),
            (
                "kubernetes.io/config.seen",
                "2026-11-27T10:00:00.000000000Z".to_string(),
            ),
            ("kubernetes.io/config.source", "api".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let files = [(
            "annotations".to_string(),
            format_annotations(&m).into_bytes(),
        )]
        .into_iter()
        .collect();
        write_atomic_volume(&self.t.path().join("podinfo"), &files).unwrap();
    }
    fn release(&self, digest: &str, generation: u64) {
        let files = [
            ("digest".to_string(), digest.as_bytes().to_vec()),
            (
                "generation".to_string(),
                generation.to_string().into_bytes(),
            ),
        ]
        .into_iter()
        .collect();
        write_atomic_volume(&self.t.path().join("release"), &files).unwrap();
    }
    fn cmd(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_aether-fetcher"));
        c.arg("--root")
            .arg(self.root())
            .arg("--annotations-file")
            .arg(self.t.path().join("podinfo/annotations"))
            .arg("--release-dir")
            .arg(self.t.path().join("release"))
            .args([
                "--app",
                "demo",
                "--period",
                "50ms",
                "--max-backoff",
                "200ms",
                "--http-bind",
                &format!("127.0.0.1:{}", self.http),
            ])
            .args(extra)
            .env("AETHER_S3_ENDPOINT", &self.endpoint)
            .env("AETHER_S3_BUCKET", BUCKET)
            .env("AETHER_S3_ACCESS_KEY", AK)
            .env("AETHER_S3_SECRET_KEY", SK);
        c
    }
    fn start(&mut self, extra: &[&str]) {
        let cmd = self.cmd(extra);
        self.spawn(cmd);
    }
    /// Started so that only a change of the mounted files starts a pass: no periodic pass and
    /// no retry after a failure, so a test that inspects the volume after a failure sees it
    /// settle (one write of a volume may still wake more than one pass).
    fn start_quiet(&mut self, extra: &[&str]) {
        let mut all = vec!["--period", "1h", "--max-backoff", "1h"];
        all.extend_from_slice(extra);
        self.start(&all);
    }
    fn spawn(&mut self, mut cmd: Command) {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        capture(err, self.log.clone());
        self.child = Some(child);
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
    fn live(&self) -> Option<String> {
        fs::read_to_string(self.root().join("current/version.txt")).ok()
    }
    /// The names under `.releases`, sorted (temporary and trash directories included).
    fn releases_on_disk(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root().join(".releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
    /// Makes each of `ds` (uploaded as `versions`) the wanted release in turn, generations
    /// 1, 2, …, waiting until each is live.
    fn go_live_in_turn(&self, ds: &[Digest], versions: &[&str]) {
        for (i, d) in ds.iter().enumerate() {
            self.annotate(&d.to_string(), i as u64 + 1);
            self.wait_for("live", || self.live().as_deref() == Some(versions[i]));
        }
    }
    fn wait_for(&self, what: &str, f: impl FnMut() -> bool) {
        wait_for(what, PATIENCE, f, || {
            format!("status: {}\n--- log ---\n{}", self.try_status(), self.log())
        });
    }
    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
    }
    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status").1).unwrap()
    }
    /// The status, or null while the HTTP endpoint is not up yet.
    fn try_status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status").1).unwrap_or_default()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(!self.log().contains(SK), "secret in the fetcher's log");
    }
}

fn app() -> AppName {
    AppName::parse("demo").unwrap()
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn first_sync_change_rollback_status_and_probes() {
    let mut pod = Pod::new();
    let v1 = pod.upload("v1");
    let v2 = pod.upload("v2");
    pod.start(&[]);
    // Not ready before anything is wanted.
    pod.wait_for("http", || pod.get("/healthz").0 == 200);
    assert_eq!(pod.get("/readyz").0, 503);

    pod.release(&v1.to_string(), 1);
    pod.wait_for("v1 live", || pod.live().as_deref() == Some("v1"));
    pod.wait_for("ready", || pod.get("/readyz").0 == 200);
    // The line follows the saved status.
    pod.wait_for("the new-digest line", || {
        pod.log()
            .contains(&format!("[fetcher] new digest {v1} generation 1 in "))
    });
    assert_eq!(
        fs::read_link(pod.root().join("current")).unwrap(),
        Path::new(".releases").join(v1.to_string())
    );
    assert_eq!(
        fs::read_to_string(pod.root().join(".reload/trigger")).unwrap(),
        // The inspector's port, 0: off (`cargo xtask debug`).
        format!("{v1} {:020} {:05}\n", 1, 0)
    );

    // The annotations (higher generation) win over the release ConfigMap.
    pod.annotate(&v2.to_string(), 2);
    pod.wait_for("v2 live", || pod.live().as_deref() == Some("v2"));
    // The status follows the swap once it is durable.
    pod.wait_for("v2 in the status", || {
        pod.status()["digest"] == v2.to_string()
    });
    let s = pod.status();
    assert_eq!(s["generation"], 2);
    assert_eq!(s["consecutive_failures"], 0);
    assert!(s["fetched_at"].as_str().unwrap().starts_with("20"));

    // Rollback is a newer generation naming an older digest; it is still on disk, so no download.
    let gets = pod.server.as_ref().unwrap().requests("GET");
    pod.release(&v1.to_string(), 3);
    pod.wait_for("rolled back", || pod.live().as_deref() == Some("v1"));
    assert_eq!(
        pod.server.as_ref().unwrap().requests("GET"),
        gets,
        "a kept release is not downloaded again"
    );

    // `current` moves first; the counters follow once the swap is durable and the trigger
    // written.
    pod.wait_for("the third sync counted", || {
        pod.get("/metrics")
            .1
            .contains("aether_fetcher_syncs_total 3")
    });
    let metrics = pod.get("/metrics").1;
    assert!(metrics.contains("aether_fetcher_ready 1"), "{metrics}");
    // `aether-fetcher status` prints the same from local state, which is written a moment
    // after the in-memory counters that /metrics serves.
    let st = wait_until("the saved status of generation 3", PATIENCE, || {
        let out = Command::new(env!("CARGO_BIN_EXE_aether-fetcher"))
            .arg("status")
            .arg("--root")
            .arg(pod.root())
            .output()
            .unwrap();
        assert!(out.status.success());
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if st["generation"] == 3 {
            Ok(st)
        } else {
            Err(st)
        }
    });
    assert_eq!(st["digest"], v1.to_string());
}

#[test]
fn mismatched_and_corrupt_artifacts_never_replace_the_live_release() {
    let mut pod = Pod::new();
    let v1 = pod.upload("v1");
    pod.annotate(&v1.to_string(), 1);
    // No retries: the volume is listed after the failures.
    pod.start_quiet(&[]);
    pod.wait_for("v1 live", || pod.live().as_deref() == Some("v1"));

    // Bytes of another artifact stored under a key that names a digest they do not have.
    let src = pod.t.path().join("other");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("version.txt"), "evil").unwrap();
    let (evil, _) = pack_to_vec(&src).unwrap();
    let fake = Digest::parse(&"e".repeat(64)).unwrap();
    pod.store()
        .put_bytes(&object_key(&app(), &fake), &evil)
        .unwrap();
    pod.annotate(&fake.to_string(), 2);
    pod.wait_for("mismatch reported", || {
        pod.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("digest mismatch"))
    });
    assert_eq!(pod.live().as_deref(), Some("v1"));
    assert_eq!(pod.status()["last_error_cause"], "digest_mismatch");
    // Still ready: the last good release keeps serving; turning unready would pull the pod
    // out of its Service over a bad upload.
    assert_eq!(pod.get("/readyz").0, 200);

    // Garbage whose digest does match its key: verified, but not a gzip.
    let garbage = b"this is not a gzip stream at all".to_vec();
    let gd = Digest::from_bytes(sha256(&garbage));
    pod.store()
        .put_bytes(&object_key(&app(), &gd), &garbage)
        .unwrap();
    pod.annotate(&gd.to_string(), 3);
    pod.wait_for("corrupt reported", || {
        pod.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("corrupt archive"))
    });
    assert_eq!(pod.live().as_deref(), Some("v1"));
    assert_eq!(
        pod.status()["last_error_cause"],
        "archive_refused",
        "{}",
        pod.status()
    );
    assert!(pod.status()["consecutive_failures"].as_u64().unwrap() >= 1);
    let metrics = pod.get("/metrics").1;
    for cause in ["digest_mismatch", "archive_refused"] {
        let line = format!("aether_fetcher_failures_total{{cause=\"{cause}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in {metrics}"))
            .parse()
            .unwrap();
        assert!(n >= 1, "{metrics}");
    }
    assert!(
        metrics.contains("aether_fetcher_failures_total{cause=\"no_space\"} 0"),
        "{metrics}"
    );
    // Nothing half-extracted is visible.
    // The volume writer's own clean-up can wake the fetcher for one more (failing) pass after
    // the reported one: wait for the volume to settle rather than list it once.
    let only_v1 = vec![v1.to_string()];
    pod.wait_for("only the verified release on disk", || {
        pod.releases_on_disk() == only_v1
    });

    // A good version after failures recovers.
    let v2 = pod.upload("v2");
    pod.annotate(&v2.to_string(), 4);
    pod.wait_for("v2 live", || pod.live().as_deref() == Some("v2"));
    pod.wait_for("the failure streak reset", || {
        pod.status()["consecutive_failures"] == 0
    });
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).into()
}

#[test]
fn store_down_then_up_recovers_without_restart() {
    let mut pod = Pod::new();
    let v1 = pod.upload("v1");
    let addr = pod.server.as_ref().unwrap().addr();
    pod.server = None; // stop the store
    pod.annotate(&v1.to_string(), 1);
    pod.start(&[]);
    pod.wait_for("failures", || {
        pod.get("/status").0 == 200
            && pod.status()["consecutive_failures"].as_u64().unwrap_or(0) >= 2
    });
    assert!(
        pod.status()["last_error"]
            .as_str()
            .unwrap()
            .contains("is the store running"),
        "{}",
        pod.status()
    );
    let pid = pod.child.as_ref().unwrap().id();
    pod.server = Some(Server::start(&pod.t.path().join("s3"), addr, AK, SK).unwrap());
    pod.wait_for("v1 live", || pod.live().as_deref() == Some("v1"));
    assert_eq!(pod.child.as_ref().unwrap().id(), pid);
    assert!(
        pod.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the fetcher kept running"
    );
}

/// The app container's readiness: 200 only while `aether-run` reports a live app process that
/// serves; a crash loop (restarting) or no report at all is 503 with the reason.
#[test]
fn app_ready_follows_what_aether_run_reports() {
    use aether_artifact::{RunState, RunnerStatus};
    let mut pod = Pod::new();
    let v1 = pod.upload("v1");
    pod.annotate(&v1.to_string(), 1);
    let run_status = pod.t.path().join("run-status.json");
    let rs = run_status.to_str().unwrap().to_string();
    pod.start(&["--run-status", &rs]);
    pod.wait_for("v1 live", || pod.live().as_deref() == Some("v1"));
    let (code, body) = pod.get("/app-ready");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("has not reported"), "{body}");
    let write = |r: RunnerStatus| {
        let tmp = run_status.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec(&r).unwrap()).unwrap();
        fs::rename(&tmp, &run_status).unwrap();
    };
    write(RunnerStatus {
        state: RunState::Serving,
        pid: Some(42),
        digest: Some(v1),
        ..Default::default()
    });
    assert_eq!(pod.get("/app-ready").0, 200);
    write(RunnerStatus {
        state: RunState::Restarting,
        last_exit: Some("pid 42 exited with status 1".into()),
        digest: Some(v1),
        ..Default::default()
    });
    let (code, body) = pod.get("/app-ready");
    assert_eq!(code, 503);
    assert!(
        body.contains("restarting") && body.contains("exited with status 1"),
        "{body}"
    );
    // The pod's own startup gate is unaffected: the release is live.
    assert_eq!(pod.get("/readyz").0, 200);
}

/// A fetcher told to require signatures refuses to start without a key, so a key lost from a
/// pod's configuration stops it instead of turning verification off; without the requirement
/// it runs and reports that it does not verify.
#[test]
fn required_signatures_without_a_key_refuse_to_start() {
    let pod = Pod::new();
    let out = pod
        .cmd(&["--require-signatures", "true", "--one-time"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("signatures are required") && err.contains("AETHER_FETCHER_PUBLIC_KEY"),
        "{err}"
    );
    let v1 = pod.upload("v1");
    pod.release(&v1.to_string(), 1);
    assert!(pod.cmd(&["--one-time"]).status().unwrap().success());
    let st = Command::new(env!("CARGO_BIN_EXE_aether-fetcher"))
        .arg("status")
        .arg("--root")
        .arg(pod.root())
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert!(st.get("verifies_key").is_none(), "{st}");
}

#[test]
fn max_failures_exits_non_zero() {
    let mut pod = Pod::new();
    let v1 = pod.upload("v1");
    pod.server = None;
    pod.annotate(&v1.to_string(), 1);
    let out = pod
        .cmd(&["--max-failures", "2", "--http-bind", ""])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 consecutive failures"), "{err}");
    assert!(!err.contains(SK));
}

#[test]
fn one_time_mode_and_leftover_cleanup() {
    let pod = Pod::new();
    // Nothing wanted yet: one-time fails clearly.
    let out = pod.cmd(&["--one-time"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to sync"));
    // A crash left a half-extracted directory and a temporary symlink behind.
    let rel = pod.root().join(".releases");
    fs::create_dir_all(rel.join(".tmp-abc-1-2/half")).unwrap();
    std::os::unix::fs::symlink(".releases/x", pod.root().join(".current.tmp999")).unwrap();
    let v1 = pod.upload("v1");
    pod.release(&v1.to_string(), 1);
    let out = pod.cmd(&["--one-time"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pod.live().as_deref(), Some("v1"));
    assert!(!rel.join(".tmp-abc-1-2").exists() && !pod.root().join(".current.tmp999").exists());
}

#[test]
fn gc_keeps_the_live_release_and_respects_keep() {
    let mut pod = Pod::new();
    let ds: Vec<Digest> = ["v1", "v2", "v3"].iter().map(|v| pod.upload(v)).collect();
    pod.start(&["--keep", "2", "--gc-grace", "0s"]);
    pod.go_live_in_turn(&ds, &["v1", "v2", "v3"]);
    let on_disk = || pod.releases_on_disk();
    let mut want = vec![ds[1].to_string(), ds[2].to_string()];
    want.sort();
    pod.wait_for("gc", || on_disk() == want);
    // Roll back to the removed one: fetched again; the live release is never the one removed.
    pod.annotate(&ds[0].to_string(), 10);
    pod.wait_for("v1 again", || pod.live().as_deref() == Some("v1"));
    let mut want = vec![ds[0].to_string(), ds[2].to_string()];
    want.sort();
    pod.wait_for("gc again", || on_disk() == want);
}

/// GC never removes what `aether-run` still runs: after a failed start of a newer release the
/// app keeps serving an older one, which is no longer the fetcher's live release. Once the app
/// moves on, that release goes like any other.
#[test]
fn gc_spares_the_release_the_app_still_runs() {
    use aether_artifact::{RunState, RunnerStatus};
    let mut pod = Pod::new();
    let ds: Vec<Digest> = ["v1", "v2", "v3"].iter().map(|v| pod.upload(v)).collect();
    let run_status = pod.t.path().join("run-status.json");
    let runs = |d: Digest| {
        let r = RunnerStatus {
            state: RunState::Serving,
            digest: Some(d),
            ..Default::default()
        };
        fs::write(&run_status, serde_json::to_vec(&r).unwrap()).unwrap();
    };
    runs(ds[0]);
    let rs = run_status.to_str().unwrap().to_string();
    pod.start(&["--keep", "1", "--gc-grace", "0s", "--run-status", &rs]);
    pod.go_live_in_turn(&ds, &["v1", "v2", "v3"]);
    let on_disk = || pod.releases_on_disk();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let want = sorted(vec![ds[0].to_string(), ds[2].to_string()]);
    pod.wait_for("v2 collected, v1 (the app's) kept", || on_disk() == want);
    runs(ds[2]);
    let want = vec![ds[2].to_string()];
    pod.wait_for("v1 collected once the app left it", || on_disk() == want);
}

#[test]
fn readers_never_see_a_mix_during_100_swaps() {
    let mut pod = Pod::new();
    let a = pod.upload("aaaa");
    let b = pod.upload("bbbb");
    pod.annotate(&a.to_string(), 1);
    pod.start(&["--period", "5ms"]);
    pod.wait_for("a live", || pod.live().as_deref() == Some("aaaa"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let root = pod.root();
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Resolve `current` once, as a process that opened the tree would.
                let dir = fs::File::open(root.join("current")).expect("current always resolves");
                let base = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&dir)
                ));
                let v = fs::read_to_string(base.join("version.txt")).expect("file present");
                let c = fs::read_to_string(base.join("lib/check.txt")).expect("file present");
                assert_eq!(v, c, "a mix of two versions");
                assert!(v == "aaaa" || v == "bbbb", "partial content {v:?}");
                // A path re-opened from the top is also always complete.
                let direct =
                    fs::read_to_string(root.join("current/version.txt")).expect("file present");
                assert!(direct == "aaaa" || direct == "bbbb");
                reads += 1;
            }
            reads
        })
    };
    for g in 2..102u64 {
        let (d, v) = if g % 2 == 0 { (b, "bbbb") } else { (a, "aaaa") };
        pod.annotate(&d.to_string(), g);
        pod.wait_for("swap", || pod.live().as_deref() == Some(v));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("reader saw a mix or a missing file");
    assert!(reads > 100, "reader ran {reads} times");
    // The status is saved after the swap, the trigger and the flush that makes the swap
    // durable: wait for it rather than read it the moment `current` moved.
    pod.wait_for("101 syncs in the status", || pod.status()["syncs"] == 101);
}

/// A fetcher pointed at `endpoint` (a fault, not a store), wanting one digest.
fn faulty_pod(endpoint: &str) -> Pod {
    let mut p = Pod::new();
    p.endpoint = endpoint.to_string();
    p.annotate(&"a".repeat(64), 1);
    p.start(&["--connect-timeout", "1s", "--stall-timeout", "700ms"]);
    p
}

/// Waits (bounded) until the fetcher reports a failure containing `cause`, then checks that it
/// says so everywhere: status (with "failing since"), log (with the endpoint) and metrics.
fn assert_reports(p: &Pod, endpoint: &str, cause: &str) {
    // The HTTP endpoint comes up a moment after the process starts. The wait's bound (30 s)
    // is itself well under the 120 s pass deadline: the per-attempt timeouts did it.
    p.wait_for(cause, || {
        p.try_status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(cause))
    });
    let st = p.status();
    assert!(st["failing_since"].is_string(), "{st}");
    assert_eq!(st["ready"], false);
    p.wait_for("a retry", || {
        p.status()["consecutive_failures"].as_u64().unwrap_or(0) >= 2
    });
    let log = p.log();
    assert!(
        log.contains("failing since") && log.contains("retrying in") && log.contains(endpoint),
        "{log}"
    );
    let metrics = p.get("/metrics").1;
    let since = metrics
        .lines()
        .find_map(|l| l.strip_prefix("aether_fetcher_retrying_since_seconds "))
        .unwrap();
    assert!(since.parse::<u64>().unwrap() > 1_700_000_000, "{metrics}");
}

#[test]
fn an_endpoint_that_drops_connections_fails_on_the_connect_timeout() {
    // A listener whose accept queue is full: Linux drops further SYNs, as a firewall DROP does.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut fill = Vec::new();
    while let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        fill.push(c);
        assert!(fill.len() < 5000, "the accept queue never filled");
    }
    let endpoint = format!("http://{addr}");
    let p = faulty_pod(&endpoint);
    assert_reports(&p, &endpoint, "connect timeout");
    drop(l);
}

#[test]
fn a_store_that_never_answers_or_stalls_mid_body_fails_on_the_stall_timeout() {
    // Accepts, reads the request, never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_ep = format!("http://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    let p = faulty_pod(&silent_ep);
    assert_reports(&p, &silent_ep, "no response");
    drop(p);

    // Answers 200 with a real artifact's length, sends its first 64 KiB (a valid gzip start, so
    // the unpacker keeps reading), then goes silent.
    let src = tempfile::tempdir().unwrap();
    // Incompressible, so the artifact is as large as the file.
    let noise: Vec<u8> = (0..32_000u32)
        .flat_map(|i| sha256(&i.to_le_bytes()))
        .collect();
    fs::write(src.path().join("big.bin"), noise).unwrap();
    let (artifact, _) = pack_to_vec(src.path()).unwrap();
    assert!(artifact.len() > 200_000);
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stall_ep = format!("http://{}", stall.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut c in stall.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                artifact.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&artifact[..65536]);
            held.push(c);
        }
    });
    let p = faulty_pod(&stall_ep);
    assert_reports(&p, &stall_ep, "no bytes for");
    assert!(p.status()["last_error"]
        .as_str()
        .unwrap()
        .contains("stall timeout"));
}

/// Tests that need root (a tmpfs mount, another uid) run in CI, which is root; elsewhere they
/// say so, and under CI not running is a failure (the one rule, in aether-testkit).
fn needs_root(what: &str) -> bool {
    require(is_root(), &format!("{what} needs root"))
}

/// A tree with one incompressible file of `n` bytes, uploaded; returns its digest.
fn upload_random(pod: &Pod, name: &str, n: usize) -> Digest {
    let src = pod.t.path().join(name);
    fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    fs::write(src.join("blob.bin"), &data).unwrap();
    fs::write(src.join("version.txt"), name).unwrap();
    let (bytes, p) = pack_to_vec(&src).unwrap();
    pod.store()
        .put_bytes(&object_key(&app(), &p.digest), &bytes)
        .unwrap();
    p.digest
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full volume (a 3 MiB tmpfs, a 6 MiB artifact): the cause is "no space" with the sizes,
/// not the broken pipe the download saw; the partial release is removed and the old one serves.
#[test]
fn a_full_volume_is_reported_as_no_space_with_sizes() {
    if !needs_root("mounting a small tmpfs") {
        return;
    }
    let mut pod = Pod::new();
    fs::create_dir_all(pod.root()).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(pod.root())
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    let _m = Mount(pod.root());
    let v1 = pod.upload("v1");
    pod.annotate(&v1.to_string(), 1);
    // A debug build of the fetcher would not fit beside the releases; the runner is not needed.
    // No retries: the volume is listed after the failure.
    pod.start_quiet(&["--install-runner", "false"]);
    pod.wait_for("v1 live", || pod.live().as_deref() == Some("v1"));
    let big = upload_random(&pod, "big", 6 << 20);
    pod.annotate(&big.to_string(), 2);
    pod.wait_for("no space reported", || {
        pod.try_status()["last_error_cause"] == "no_space"
    });
    let st = pod.status();
    let e = st["last_error"].as_str().unwrap();
    assert!(
        e.contains("no space left on the volume")
            && e.contains("free of 3.0 MiB")
            && e.contains("MiB compressed")
            && e.contains("sizeLimit"),
        "{e}"
    );
    assert!(
        !e.contains("Broken pipe") && !e.contains("is the store running"),
        "{e}"
    );
    assert_eq!(pod.live().as_deref(), Some("v1"));
    // The fetcher saves its status before it logs the failed pass.
    pod.wait_for("the log line", || {
        pod.log().contains("sync failed: no_space")
    });
    // As above: a pass woken by the volume writer's clean-up may still be under way.
    let only_v1 = vec![v1.to_string()];
    pod.wait_for("the partial release gone", || {
        pod.releases_on_disk() == only_v1
    });
}

/// A volume the fetcher's user cannot write: "permission denied", the path and the uid.
#[test]
fn an_unwritable_volume_is_reported_as_permission_denied() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    if !needs_root("running the fetcher as another user") {
        return;
    }
    let mut pod = Pod::new();
    // The fetcher runs as nobody; its root is its own, but `.releases` belongs to root.
    fs::set_permissions(pod.t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(pod.root().join(".releases")).unwrap();
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    };
    chown(&pod.root());
    let v1 = pod.upload("v1");
    pod.annotate(&v1.to_string(), 1);
    let mut cmd = pod.cmd(&[]);
    cmd.uid(65534).gid(65534);
    pod.spawn(cmd);
    pod.wait_for("permission reported", || {
        pod.try_status()["last_error_cause"] == "permission_denied"
    });
    let st = pod.status();
    let e = st["last_error"].as_str().unwrap();
    assert!(
        e.contains("uid 65534") && e.contains(".releases") && e.contains("Permission denied"),
        "{e}"
    );
}

/// The pass deadline covers extraction: an artifact of many files that cannot be written within
/// `--timeout` is cut off mid-way (nothing left behind), not finished and then reported late.
#[test]
fn the_pass_deadline_covers_extraction() {
    let mut pod = Pod::new();
    let src = pod.t.path().join("many");
    for i in 0..20_000 {
        let d = src.join(format!("d{}", i / 500));
        if i % 500 == 0 {
            fs::create_dir_all(&d).unwrap();
        }
        fs::write(
            d.join(format!("f{i}.js")),
            format!("module.exports = {i};\n"),
        )
        .unwrap();
    }
    let (bytes, p) = pack_to_vec(&src).unwrap();
    pod.store()
        .put_bytes(&object_key(&app(), &p.digest), &bytes)
        .unwrap();
    pod.annotate(&p.digest.to_string(), 1);
    // No retry, which would have to be no faster to pass anyway, races the check below.
    pod.start_quiet(&["--timeout", "150ms"]);
    pod.wait_for("timeout reported", || {
        pod.try_status()["last_error_cause"] == "timeout"
    });
    let e = pod.status()["last_error"].as_str().unwrap().to_string();
    assert!(
        e.contains("unpacking took longer than the pass deadline"),
        "{e}"
    );
    assert!(
        !pod.root()
            .join(".releases")
            .join(p.digest.to_string())
            .exists(),
        "extraction was cut off, not completed"
    );
}

/// An `https://` store with a private CA, through a real TLS terminator: the fetcher syncs when
/// AETHER_S3_CA_FILE names the CA, and reports `tls` with the fix when it does not.
#[test]
fn syncs_over_tls_with_a_private_ca() {
    use aether_s3local::tls::{Terminator, TestCa};
    let mut pod = Pod::new();
    let ca = TestCa::new().unwrap();
    let upstream = pod.server.as_ref().unwrap().addr();
    let tls = Terminator::start(&ca, upstream).unwrap();
    let v1 = pod.upload("v1");
    pod.endpoint = tls.endpoint();
    pod.annotate(&v1.to_string(), 1);
    pod.start(&[]);
    pod.wait_for("tls reported", || {
        pod.try_status()["last_error_cause"] == "tls"
    });
    let e = pod.status()["last_error"].as_str().unwrap().to_string();
    assert!(e.contains("AETHER_S3_CA_FILE"), "{e}");
    pod.stop();

    let ca_file = pod.t.path().join("ca.pem");
    fs::write(&ca_file, &ca.ca_pem).unwrap();
    let mut cmd = pod.cmd(&[]);
    cmd.env("AETHER_S3_CA_FILE", &ca_file);
    pod.spawn(cmd);
    pod.wait_for("v1 live over TLS", || pod.live().as_deref() == Some("v1"));
}

/// A provenance record for `digest`, signed with `sk` (what `hot-upload` writes with a signing
/// key), stored beside the artifact.
fn sign_release(pod: &Pod, sk: &minisign::SecretKey, digest: &Digest, comment: &str) {
    use aether_artifact::provenance;
    let rec = serde_json::json!({
        "schema": provenance::SCHEMA, "app": "demo", "digest": digest.to_string(),
        "layers": [], "entry_point": "server.js",
        "source": {"dir": "src", "git": null},
        "tool": {"name": "aether-dev", "version": "test"},
        "built_by": "test@host", "created_at": "2026-11-30T00:00:00Z",
    });
    let bytes = serde_json::to_vec(&rec).unwrap();
    let sig = minisign::sign(None, sk, std::io::Cursor::new(&bytes), Some(comment), None).unwrap();
    let store = pod.store();
    store
        .put_bytes(&provenance::key(&app(), digest), &bytes)
        .unwrap();
    store
        .put_bytes(
            &provenance::signature_key(&app(), digest),
            sig.into_string().as_bytes(),
        )
        .unwrap();
}

/// With a public key configured, only releases whose provenance that key signed go live:
/// unsigned, signed by another key, or with a record changed after signing are refused with
/// `bad_signature`, and the signed release before them keeps serving.
#[test]
fn signatures_are_required_when_a_public_key_is_set() {
    use aether_artifact::provenance::trusted_comment;
    let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let other = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let mut pod = Pod::new();
    let v1 = pod.upload("v1");
    sign_release(&pod, &kp.sk, &v1, &trusted_comment(&app(), &v1));
    pod.annotate(&v1.to_string(), 1);
    pod.start(&["--public-key", &kp.pk.to_base64()]);
    pod.wait_for("signed v1 live", || pod.live().as_deref() == Some("v1"));
    // It says which key: the id in the comment minisign writes into the `.pub` file.
    let boxed = kp.pk.to_box().unwrap().to_string();
    let id = boxed.lines().next().unwrap().rsplit(' ').next().unwrap();
    assert_eq!(pod.status()["verifies_key"], id, "{boxed}");

    let refused = |pod: &Pod, gen: u64, digest: &Digest, what: &str| {
        pod.annotate(&digest.to_string(), gen);
        pod.wait_for(what, || {
            let st = pod.try_status();
            st["last_error_cause"] == "bad_signature"
                && st["last_error"].as_str().is_some_and(|e| e.contains(what))
        });
        assert_eq!(pod.live().as_deref(), Some("v1"), "{what}");
    };
    let v2 = pod.upload("v2");
    refused(&pod, 2, &v2, "is not signed");
    sign_release(&pod, &other.sk, &v2, &trusted_comment(&app(), &v2));
    refused(&pod, 3, &v2, "bad signature");
    // A valid signature over a record that is then changed.
    sign_release(&pod, &kp.sk, &v2, &trusted_comment(&app(), &v2));
    let key = aether_artifact::provenance::key(&app(), &v2);
    let mut rec = Vec::new();
    pod.store().get_to_writer(&key, &mut rec).unwrap();
    let tampered = String::from_utf8(rec)
        .unwrap()
        .replace("test@host", "evil@host");
    pod.store().put_bytes(&key, tampered.as_bytes()).unwrap();
    refused(&pod, 4, &v2, "bad signature");
    // A genuine signature for another release, copied over: the record names v1, not v2.
    let v1_rec = {
        let mut b = Vec::new();
        pod.store()
            .get_to_writer(&aether_artifact::provenance::key(&app(), &v1), &mut b)
            .unwrap();
        b
    };
    let mut v1_sig = Vec::new();
    pod.store()
        .get_to_writer(
            &aether_artifact::provenance::signature_key(&app(), &v1),
            &mut v1_sig,
        )
        .unwrap();
    pod.store().put_bytes(&key, &v1_rec).unwrap();
    pod.store()
        .put_bytes(
            &aether_artifact::provenance::signature_key(&app(), &v2),
            &v1_sig,
        )
        .unwrap();
    refused(&pod, 5, &v2, "not this release");

    sign_release(&pod, &kp.sk, &v2, &trusted_comment(&app(), &v2));
    pod.annotate(&v2.to_string(), 6);
    pod.wait_for("signed v2 live", || pod.live().as_deref() == Some("v2"));
}
