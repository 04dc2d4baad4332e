//! The live page (`cargo xtask ui`) in a real headless browser (Debian's chromium), against the
//! local target with the real fetcher, `aether-run` and `node`: the pod and its release, a
//! hot-patch's waterfall within 2 s of the command returning, the logs, and the rollback button.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aether_testkit::cdp::{chromium, Browser, Cdp};
use aether_testkit::page;
use aether_testkit::{require, wait_until, PATIENCE};
use base64::Engine;

const V: &str = "console.log('hello from VERSION');\n\
    require('http').createServer((q, r) => r.end('VERSION')).listen(process.env.PORT);\n";

/// What the page shows, as a JSON value.
fn shown(page: &mut Cdp, js: &str) -> serde_json::Value {
    page.eval(js).unwrap_or_else(|e| panic!("{e}"))
}

/// `xtask ui`, killed on drop.
struct UiProcess(std::process::Child);
impl Drop for UiProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// v1 deployed from `app/` and v2 uploaded from `app2/`: the app's URL and both digests.
fn v1_deployed_v2_uploaded(p: &std::path::Path, env: &[(&str, &str)]) -> (String, String, String) {
    let v1 = app_dir(p, &V.replace("VERSION", "v1"));
    let deployed = xtask(p, env, &["deploy-sample", "demo", v1.to_str().unwrap()]).ok();
    let v2 = p.join("app2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("server.js"), V.replace("VERSION", "v2")).unwrap();
    let d2 = xtask(p, env, &["hot-upload", "demo", v2.to_str().unwrap()])
        .ok()
        .last("digest");
    (deployed.last("url"), deployed.last("digest"), d2)
}

/// `xtask <args>` with the page (`ui`, `dev --ui`), killed on drop; the page's address (its
/// first line on stdout) and the process's stderr as it comes.
fn with_page(
    p: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (UiProcess, String, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args)
        .env("AETHER_PROJECT_DIR", p)
        .env("AETHER_APP_PORT", "0")
        .env_remove("AETHER_S3_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    aether_testkit::capture(child.stderr.take().unwrap(), stderr.clone());
    let out = child.stdout.take().unwrap();
    let ui = UiProcess(child);
    let line = BufReader::new(out).lines().next().unwrap().unwrap();
    let url = line
        .strip_prefix("ui: ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (ui, url, stderr)
}

#[test]
fn the_page_shows_a_hot_patch_and_its_buttons_work() {
    if !require(node_available(), "node is not installed") {
        return;
    }
    let Some(bin) = chromium() else {
        assert!(
            !aether_testkit::in_ci(),
            "CI must install chromium (`cargo xtask test` does)"
        );
        return aether_testkit::skip("chromium is not installed");
    };
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let _down = DownApp(p, "demo");
    let env = [("AETHER_TARGET", "local")];
    let (app_url, d1, d2) = v1_deployed_v2_uploaded(p, &env);
    let (ui, url, _) = with_page(p, &env, &["ui", "demo"]);

    let browser = Browser::open(&bin, &url).unwrap();
    let mut page = browser.page(&url).unwrap();
    let serves = "document.querySelector('#app-demo tr[data-pod]')?.dataset.serves ?? null";
    wait_until("the page to show the pod serving v1", PATIENCE, || {
        let v = shown(&mut page, serves);
        (v == d1.as_str()).then_some(()).ok_or(v)
    });
    wait_until("the app's log line on the page", PATIENCE, || {
        let v = shown(&mut page, "document.querySelector('#logs').textContent");
        v.as_str()
            .unwrap()
            .contains("hello from v1")
            .then_some(())
            .ok_or(v)
    });

    // A hot-patch from the CLI, in another process: the page learns of it from the pods alone.
    let patched = xtask(p, &env, &["hot-patch", "demo", &d2, "--wait", "30"]).ok();
    let returned = Instant::now();
    let generation = patched.last("generation");
    let reload = format!(
        "document.querySelector('#app-demo .reload[data-generation=\"{generation}\"][data-digest=\"{d2}\"]')"
    );
    let both = format!(
        "({{bars: {reload}?.querySelectorAll('.track').length ?? 0, \
           pods: {reload}?.querySelectorAll('.who').length ?? 0, serves: {serves}}})"
    );
    // The issue's promise: the waterfall and the new digest within 2 s of the command returning.
    let seen = wait_until(
        "the reload's waterfall and the new digest",
        Duration::from_secs(2),
        || {
            let v = shown(&mut page, &both);
            (v["bars"].as_u64() >= Some(2) && v["serves"] == d2.as_str())
                .then_some(v.clone())
                .ok_or(v)
        },
    );
    eprintln!(
        "the page showed the reload {:?} after the command returned: {seen}",
        returned.elapsed()
    );
    assert_eq!(
        seen["pods"], 2,
        "a row for all pods and one per pod: {seen}"
    );
    screenshot(&mut page, "ui-after-hot-patch.png");

    // Every control has a label and nothing jumps the tab order.
    let a11y = shown(
        &mut page,
        "({unlabelled: [...document.querySelectorAll('select,input')].filter(e => !e.labels.length).map(e => e.id), \
          jumps: document.querySelectorAll('[tabindex]:not([tabindex=\"0\"]):not([tabindex=\"-1\"])').length, \
          buttons: [...document.querySelectorAll('button')].map(b => b.textContent)})",
    );
    assert_eq!(a11y["unlabelled"], serde_json::json!([]), "{a11y}");
    assert_eq!(a11y["jumps"], 0, "{a11y}");

    // The rollback button: the same operation as `rollback --to`, and the CLI agrees.
    shown(
        &mut page,
        &format!(
            "(() => {{ const s = document.querySelector('#app-demo select'); s.value = '{d1}'; \
               document.querySelector('#app-demo [data-act=rollback]').click(); return s.value; }})()"
        ),
    );
    wait_until("the page to show the rollback done", PATIENCE, || {
        let v = shown(
            &mut page,
            &format!("({{serves: {serves}, said: document.querySelector('#app-demo .action-status').textContent}})"),
        );
        (v["serves"] == d1.as_str()
            && v["said"]
                .as_str()
                .unwrap()
                .starts_with("rollback: generation"))
        .then_some(())
        .ok_or(v)
    });
    let st = xtask(p, &env, &["hot-status", "demo", "--json"]).ok();
    assert!(
        st.stdout.contains(&format!("\"digest\": \"{d1}\"")),
        "{}",
        st.stdout
    );
    assert_eq!(get(&app_url), "v1");
    drop(ui);
}

/// Kept under `target/test-artifacts/` for people (and CI) to look at.
fn screenshot(page: &mut Cdp, name: &str) {
    let shot = page
        .call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png", "captureBeyondViewport": true}),
        )
        .unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), &png).unwrap();
    eprintln!("screenshot: {}", dir.join(name).display());
}

/// `curl` with extra arguments: the HTTP status it got.
fn status(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dev_ui_streams_each_saves_full_trace_and_refuses_other_sites() {
    if !require(node_available(), "node is not installed") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let _down = DownApp(p, "demo");
    let env = [("AETHER_TARGET", "local")];
    let app_url = xtask(p, &env, &["deploy-sample", "demo"]).ok().last("url");
    let (_dev, url, stderr) = with_page(p, &env, &["dev", "demo", "--ui"]);
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();

    // Another site can make the browser send requests, but not with the page's token; a
    // rebinding site's name is not the page's host.
    let tok = page::token(&url).unwrap();
    let body = r#"{"app":"demo"}"#;
    let patch = format!("{url}api/hot-patch");
    assert_eq!(status(&["-X", "POST", "-d", body, &patch]), "403");
    assert_eq!(status(&[&format!("{url}events")]), "403");
    let evil = format!("Host: evil.example:{port}");
    assert_eq!(
        status(&["-H", &evil, &format!("{url}events?token={tok}")]),
        "421"
    );
    assert_eq!(status(&["-H", &evil, &url]), "421");

    let events = page::events(&url, &tok).unwrap();
    aether_testkit::wait_for(
        "dev to watch the app",
        PATIENCE,
        || stderr.lock().unwrap().contains("watching "),
        || stderr.lock().unwrap().clone(),
    );
    let sample = p.join("examples/sample-node/server.js");
    let text = std::fs::read_to_string(&sample).unwrap();
    std::fs::write(
        &sample,
        text.replace("const VERSION = 'v1'", "const VERSION = 'seen'"),
    )
    .unwrap();
    // The page may first piece the reload together from the pods; dev's own trace replaces it.
    let from_dev = page::next(&events, "reload", PATIENCE, |v| {
        (v["source"] == "dev").then(|| v.clone())
    })
    .unwrap();
    let stages: Vec<&str> = from_dev["trace"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    for s in ["debounce", "pack", "upload", "app ready"] {
        assert!(stages.contains(&s), "{s} missing: {from_dev}");
    }
    assert!(get(&app_url).contains("version: seen"));
}

#[test]
fn without_a_control_plane_the_hot_patch_button_names_a_digest_or_says_why_not() {
    if !require(node_available(), "node is not installed") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let _down = DownApp(p, "demo");
    let env = [("AETHER_TARGET", "local"), ("AETHER_CONTROL", "off")];
    let (app_url, _, d2) = v1_deployed_v2_uploaded(p, &env);
    let (_ui, url, _) = with_page(p, &env, &["ui", "demo"]);
    let tok = page::token(&url).unwrap();
    let post = |body: String| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                "--max-time",
                "90",
                "-X",
                "POST",
            ])
            .args(["-H", &format!("X-Aether-Token: {tok}"), "-d", &body])
            .arg(format!("{url}api/hot-patch"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The release history lists releases, not uploads: no guessing which is the latest.
    let said = post(r#"{"app":"demo"}"#.into());
    assert!(
        said.ends_with("409") && said.contains("without a control plane"),
        "{said}"
    );
    assert_eq!(get(&app_url), "v1");
    let said = post(format!(r#"{{"app":"demo","digest":"{d2}"}}"#));
    assert!(
        said.ends_with("200") && said.contains("hot-patch: generation 2"),
        "{said}"
    );
    assert_eq!(get(&app_url), "v2");
}
