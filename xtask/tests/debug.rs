//! `cargo xtask debug` on the local target, end to end: the real fetcher and `aether-run`, a
//! real `node`, and a real DevTools client (a WebSocket `Runtime.evaluate`). The inspector
//! comes up without a new pod, follows a hot-patch, goes away on Ctrl-C, and no request to the
//! app fails through any of it.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use aether_testkit::cdp::{targets, Cdp};
use aether_testkit::{require, wait_until, PATIENCE};

const V: &str = "globalThis.aetherMarker = 'VERSION';\n\
    require('http').createServer((q, r) => r.end('VERSION')).listen(process.env.PORT);\n";

/// The app's answers while the test runs: (requests, failures).
struct Probe {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl Probe {
    fn start(url: String) -> Probe {
        let p = Probe {
            stop: Arc::default(),
            sent: Arc::default(),
            failed: Arc::default(),
        };
        let (stop, sent, failed) = (p.stop.clone(), p.sent.clone(), p.failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ok = answers(&url);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        p
    }
    fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// One request; a connection refused or reset, or a non-2xx, is a failure.
fn answers(url: &str) -> bool {
    std::process::Command::new("curl")
        .args(["-sf", "-m", "5", "-o", "/dev/null", url])
        .status()
        .is_ok_and(|s| s.success())
}

/// `xtask debug`, its stdout's `key=value` lines read as they come.
struct Session {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Session {
    fn start(p: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Session {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args)
            .env("AETHER_PROJECT_DIR", p)
            .env_remove("AETHER_S3_ENDPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Session { child, lines }
    }
    fn value(&mut self, key: &str) -> String {
        let prefix = format!("{key}=");
        for l in self.lines.by_ref() {
            if let Some(v) = l.unwrap().strip_prefix(&prefix) {
                return v.to_string();
            }
        }
        panic!(
            "xtask debug ended without printing {key}=: {}",
            self.stderr()
        );
    }
    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let mut s = String::new();
        use std::io::Read;
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut s);
        s
    }
    /// Ctrl-C, and how it ended.
    fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut s = String::new();
        use std::io::Read;
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut s);
        (self.child.wait().unwrap(), s)
    }
}

/// The marker the app's live process set, through the inspector's WebSocket.
fn marker(ws: &str) -> Result<serde_json::Value, String> {
    Cdp::connect(ws)?.eval("globalThis.aetherMarker")
}

#[test]
fn debug_attaches_a_real_inspector_follows_a_hot_patch_and_leaves_the_app_as_it_was() {
    if !require(node_available(), "node is not installed") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let _down = DownApp(p, "demo");
    let env = [("AETHER_TARGET", "local")];
    let v1 = app_dir(p, &V.replace("VERSION", "v1"));
    let deployed = xtask(p, &env, &["deploy-sample", "demo", v1.to_str().unwrap()]).ok();
    let url = deployed.last("url");
    let before = xtask(p, &env, &["hot-status", "demo", "--json"]).ok();
    let st: serde_json::Value = serde_json::from_str(&before.stdout).unwrap();
    let pod = st["pods"][0]["pod"].clone();

    let probe = Probe::start(url.clone());
    let mut s = Session::start(p, &env, &["debug", "demo"]);
    let ws = s.value("inspector");
    assert!(ws.starts_with("ws://127.0.0.1:"), "{ws}");
    assert_eq!(marker(&ws).unwrap(), "v1");
    let mut c = Cdp::connect(&ws).unwrap();
    assert_eq!(c.eval("1 + 41").unwrap(), 42);
    let status = xtask(p, &env, &["hot-status", "demo"]).ok();
    assert!(
        status.stdout.contains("node's inspector on 127.0.0.1:"),
        "{}",
        status.stdout
    );

    // A save while debugging: the new process gets the inspector once the old one lets it go.
    let v2 = p.join("app2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("server.js"), V.replace("VERSION", "v2")).unwrap();
    let d2 = xtask(p, &env, &["hot-upload", "demo", v2.to_str().unwrap()])
        .ok()
        .last("digest");
    xtask(p, &env, &["hot-patch", "demo", &d2, "--wait", "30"]).ok();
    let addr = ws
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    wait_until(
        "the inspector on the new release's process",
        PATIENCE,
        || {
            let list = targets(&addr)?;
            let ws2 = list
                .first()
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .ok_or("no target")?;
            match marker(ws2)? {
                v if v == "v2" => Ok(()),
                v => Err(format!("the inspector runs in the process that serves {v}")),
            }
        },
    );

    let (code, said) = s.interrupt();
    assert!(code.success(), "{said}");
    assert!(
        said.contains("serves without the inspector again"),
        "{said}"
    );
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the inspector still listens on {addr}"
    );
    let after = xtask(p, &env, &["hot-status", "demo", "--json"]).ok();
    let st: serde_json::Value = serde_json::from_str(&after.stdout).unwrap();
    assert!(
        st["pods"][0]["runner"]["inspector"].is_null(),
        "{}",
        after.stdout
    );
    assert_eq!(st["pods"][0]["pod"], pod, "the same pod throughout");
    assert_eq!(get(&url), "v2");
    let (sent, failed) = probe.stop();
    assert!(sent > 0);
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the debug session"
    );
}
