//! `debug` on the real cluster: node's inspector in one pod, reached through `kubectl
//! port-forward` by a real DevTools client, with no rollout and no container restart, closed
//! to everything but the forward, and gone after Ctrl-C.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;

use aether_testkit::cdp::Cdp;

use super::*;

/// The next `key=value` line `xtask debug` prints: its value.
fn printed(lines: &mut impl Iterator<Item = std::io::Result<String>>, key: &str) -> String {
    let prefix = format!("{key}=");
    lines
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("xtask debug printed no {key}="))
}

fn reachable(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn debug_attaches_through_a_port_forward_without_a_rollout() {
    let ns = Ns::new("debug");
    let deployed = ns
        .x(&["deploy-sample", "demo", ns.app("v1").to_str().unwrap()])
        .ok();
    let (url, d1) = (deployed.last("url"), deployed.last("digest"));
    let before = ns.pods();
    let generation = ns.deployment_generation();

    let mut c = ns.command(&["debug", "demo"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pod = printed(&mut lines, "pod");
    let ws = printed(&mut lines, "inspector");

    let mut cdp = Cdp::connect(&ws).unwrap();
    let entry = cdp.eval("process.argv[1]").unwrap();
    assert!(
        entry.as_str().is_some_and(|e| e.contains(&d1)),
        "the inspector runs in the process serving {d1}: {entry}"
    );
    assert_eq!(cdp.eval("6 * 7").unwrap(), 42);
    drop(cdp);

    // Only the forward reaches it: the pod's own address answers on the app's port, not on
    // the inspector's.
    let ip = ns
        .k(&["get", "pod", &pod, "-o", "jsonpath={.status.podIP}"])
        .ok()
        .stdout;
    let ip: std::net::IpAddr = ip.trim().parse().unwrap();
    if reachable(SocketAddr::new(ip, 3000)) {
        assert!(
            !reachable(SocketAddr::new(ip, 9229)),
            "the inspector answers on the pod's address {ip}"
        );
    } else {
        eprintln!("pod addresses are not routable from here: the closed port was not checked");
    }

    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut said = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{said}");
    assert!(
        said.contains("serves without the inspector again"),
        "{said}"
    );

    let st = ns.x(&["hot-status", "demo", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    for p in v["pods"].as_array().unwrap() {
        assert!(p["runner"]["inspector"].is_null(), "{}", st.stdout);
    }
    assert_eq!(ns.pods(), before, "no pod was replaced or restarted");
    assert_eq!(ns.deployment_generation(), generation, "no rollout");
    assert_eq!(get(&url).as_deref(), Some("version: v1\n"));

    // The pod goes away mid-session: the forward ends, the command says so and fails, and the
    // replacement runs without the inspector.
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pod = printed(&mut lines, "pod");
    ns.k(&["delete", "pod", &pod, "--wait=false"]).ok();
    let mut said = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(!child.wait().unwrap().success(), "{said}");
    assert!(said.contains("the debug session ended early"), "{said}");
    let st = ns.wait_status("the replacement serving", &["--json"], |r| r.code == 0);
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    for p in v["pods"].as_array().unwrap() {
        assert_ne!(p["pod"], pod.as_str());
        assert!(p["runner"]["inspector"].is_null(), "{}", st.stdout);
    }
    ns.x(&["down", "demo"]).ok();
}
