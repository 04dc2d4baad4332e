//! The control plane on the local target, end to end with the real xtask, the real
//! `aether-control` (SQLite), the real fetcher, the embedded S3 store and a real `node`: no
//! command of its own, pods with no store key, every upload registered, history read back, and
//! a control plane that goes down never stops a pod from serving.

mod common;
use common::*;

use std::fs;
use std::path::Path;

use aether_testkit::{wait_for, PATIENCE};

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{}\n{}", r.stdout, r.stderr))
}

fn state(p: &Path, file: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p.join(".aether/local").join(file)).unwrap()).unwrap()
}

fn environ_names(pid: u64) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter_map(|kv| kv.split(|b| *b == b'=').next())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

fn alive(pid: u64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, r)| !r.starts_with('Z'))
        })
        .unwrap_or(false)
}

const V: &str =
    "require('http').createServer((q, r) => r.end('VERSION')).listen(process.env.PORT);\n";

#[test]
fn pods_fetch_through_the_control_plane_and_outlive_it() {
    if !node_available() {
        return skip("node is not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let _down = DownApp(p, "demo");
    let env = [
        ("AETHER_TARGET", "local"),
        ("AETHER_PUBLISHED_BY", "ci-job-7"),
    ];
    let dir = app_dir(p, &V.replace("VERSION", "v1"));

    let deployed = xtask(p, &env, &["deploy-sample", "demo", dir.to_str().unwrap()]).ok();
    assert!(
        deployed.stderr.contains("demo's pods hold no store key"),
        "{}",
        deployed.stderr
    );
    let url = deployed.last("url");
    assert_eq!(get(&url), "v1");
    let d1 = deployed.last("digest");

    // The pod holds a token and the control plane's address, and no store key at all.
    let fetcher = state(p, "demo/pod.json")["fetcher_pid"].as_u64().unwrap();
    let names = environ_names(fetcher);
    assert!(names.iter().any(|n| n == "AETHER_CONTROL_URL"), "{names:?}");
    for k in [
        "AETHER_S3_SECRET_KEY",
        "AETHER_S3_ACCESS_KEY",
        "AETHER_CONTROL_ADMIN_TOKEN",
    ] {
        assert!(
            !names.iter().any(|n| n == k),
            "the fetcher has {k}: {names:?}"
        );
    }

    // The deploy registered the release, with who published it.
    let st = json(&xtask(p, &env, &["hot-status", "demo", "--json"]).ok());
    assert_eq!(st["control"]["wanted"]["seq"], 1, "{st}");
    assert_eq!(st["control"]["wanted"]["digest"], d1.as_str(), "{st}");
    assert_eq!(st["control"]["wanted"]["published_by"], "ci-job-7", "{st}");

    fs::write(dir.join("server.js"), V.replace("VERSION", "v2")).unwrap();
    let up = json(
        &xtask(
            p,
            &env,
            &["hot-upload", "demo", dir.to_str().unwrap(), "--json"],
        )
        .ok(),
    );
    assert_eq!(up["registered"], 2, "{up}");
    let d2 = up["digest"].as_str().unwrap().to_string();

    // `rollback --to` lists the control plane's history, newest first, the live one marked.
    let list = json(&xtask(p, &env, &["rollback", "demo", "--to", "--json"]).ok());
    assert_eq!(list["source"], "control-plane", "{list}");
    let rel = list["releases"].as_array().unwrap();
    let seen: Vec<(u64, &str, bool)> = rel
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["digest"].as_str().unwrap(),
                r["live"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, vec![(2, d2.as_str(), false), (1, d1.as_str(), true)]);

    // The control plane goes down: the pod keeps serving v1; the next release waits, and
    // hot-status says why.
    let ctl = state(p, "control.json")["pid"].as_u64().unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(ctl as i32, libc::SIGKILL) };
    wait_for(
        "the control plane to stop",
        PATIENCE,
        || !alive(ctl),
        || ctl,
    );
    let patch = xtask(p, &env, &["hot-patch", "demo", &d2, "--wait", "3"]);
    assert_ne!(patch.code, 0, "{}", patch.all());
    assert_eq!(get(&url), "v1", "the pod serves its current release");
    let st = xtask(p, &env, &["hot-status", "demo", "--json"]);
    let st = json(&st);
    assert!(
        st["control"]["error"]
            .as_str()
            .unwrap()
            .contains("not running"),
        "{st}"
    );
    let last = st["pods"][0]["last_error"].as_str().unwrap_or("");
    assert!(last.contains("control plane"), "the pod's cause: {st}");

    // The next command brings it back; the pod takes v2 without a restart, and the history
    // (SQLite) survived the crash.
    let again = json(
        &xtask(
            p,
            &env,
            &["hot-upload", "demo", dir.to_str().unwrap(), "--json"],
        )
        .ok(),
    );
    assert_eq!(
        again["registered"], 2,
        "registering again is a no-op: {again}"
    );
    wait_for(
        "v2 to be served",
        PATIENCE,
        || get(&url) == "v2",
        || get(&url),
    );
    assert_eq!(
        state(p, "demo/pod.json")["fetcher_pid"].as_u64(),
        Some(fetcher)
    );
    let list = json(&xtask(p, &env, &["rollback", "demo", "--to", "--json"]).ok());
    assert_eq!(list["releases"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list["releases"][0]["live"], true, "{list}");
}

#[test]
fn without_the_control_plane_pods_read_with_their_own_key() {
    if !node_available() {
        return skip("node is not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let _down = DownApp(p, "demo");
    let env = [("AETHER_TARGET", "local"), ("AETHER_CONTROL", "off")];
    let dir = app_dir(p, &V.replace("VERSION", "v1"));
    let deployed = xtask(p, &env, &["deploy-sample", "demo", dir.to_str().unwrap()]).ok();
    assert_eq!(get(&deployed.last("url")), "v1");
    assert!(!p.join(".aether/local/control.json").exists());
    let list = json(&xtask(p, &env, &["rollback", "demo", "--to", "--json"]).ok());
    assert_eq!(list["source"], "release-history", "{list}");
    let st = json(&xtask(p, &env, &["hot-status", "demo", "--json"]).ok());
    assert!(st.get("control").is_none(), "{st}");
}
