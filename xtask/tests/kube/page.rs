//! The live page against the real cluster: two replicas in the fleet, both pods' logs, a
//! hot-patch made elsewhere pieced together per pod, and the rollback button's reload traced
//! through the cutover. Read from the page's own event stream (the browser side is the local
//! `ui.rs` test's).

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use aether_testkit::page;

use super::*;

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn the_page_shows_every_replica_and_its_buttons_reload_them() {
    let ns = Ns::new("page");
    let deployed = ns
        .x(&[
            "deploy-sample",
            "demo",
            ns.app("v1").to_str().unwrap(),
            "--replicas",
            "2",
        ])
        .ok();
    let (url, d1) = (deployed.last("url"), deployed.last("digest"));
    let before = ns.pods();
    assert_eq!(before.len(), 2);

    let mut child = ns
        .command(&["ui", "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let _ui = Child(child);
    let line = BufReader::new(out).lines().next().unwrap().unwrap();
    let page_url = line.strip_prefix("ui: ").unwrap().to_string();
    let token = page::token(&page_url).unwrap();
    let ev = page::events(&page_url, &token).unwrap();

    page::next(&ev, "fleet", PATIENCE, |v| {
        (v["fleet"]["in_sync"] == true && v["pods"].as_array()?.len() == 2).then_some(())
    })
    .unwrap();
    // Both pods' logs, each line prefixed by its pod (aether-run's own lines are the app's).
    let mut logged = std::collections::BTreeSet::new();
    page::next(&ev, "log", PATIENCE * 2, |v| {
        logged.insert(v["pod"].as_str()?.to_string());
        (logged.len() == 2).then_some(())
    })
    .unwrap();
    let names: std::collections::BTreeSet<String> = before.iter().map(|p| p.0.clone()).collect();
    assert_eq!(logged, names);

    // A hot-patch from another process: the page pieces its trace together from both pods.
    let d2 = ns.upload("v2");
    let g2: u64 = ns
        .x(&["hot-patch", "demo", &d2, "--wait", "60"])
        .ok()
        .last("generation")
        .parse()
        .unwrap();
    let observed = page::next(&ev, "reload", PATIENCE, |v| {
        (v["generation"] == g2).then(|| v.clone())
    })
    .unwrap();
    let per_pod = observed["trace"]["per_pod"].as_array().unwrap();
    assert_eq!(per_pod.len(), 2, "{observed}");
    for p in per_pod {
        assert!(p["switched_at_ms"].is_u64(), "{observed}");
    }

    // The rollback button: the CLI's rollback, through the two-pod cutover, with its trace.
    let r = attohttpc::post(format!("{page_url}api/rollback"))
        .header("X-Aether-Token", &token)
        .text(format!(r#"{{"app":"demo","digest":"{d1}"}}"#))
        .timeout(Duration::from_secs(90))
        .send()
        .unwrap();
    let said = r.text().unwrap();
    assert!(said.contains("rollback: generation"), "{said}");
    let button = page::next(&ev, "reload", PATIENCE, |v| {
        (v["source"] == "rollback").then(|| v.clone())
    })
    .unwrap();
    assert_eq!(button["trace"]["barrier"], true, "{button}");
    assert_eq!(button["trace"]["digest"], d1.as_str(), "{button}");
    assert_eq!(button["trace"]["failed_requests"], 0, "{button}");
    assert_eq!(ns.pods(), before, "no pod was replaced or restarted");
    assert_eq!(get(&url).as_deref(), Some("version: v1\n"));
    ns.x(&["down", "demo"]).ok();
}
