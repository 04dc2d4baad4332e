//! Who may do what on the cluster: the fetcher's ServiceAccount (a watch on its release
//! ConfigMap, and the fallback when that is forbidden), and a developer bound only to the
//! documented Role.

use super::*;

/// The fetcher hears of releases from its watch on the release ConfigMap (its ServiceAccount
/// may do only that); with the watch forbidden it says so and still reloads, from the volumes.
#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn the_fetcher_watches_the_api_and_falls_back_when_forbidden() {
    let ns = Ns::new("watch");
    let url = ns.deploy_v1();
    ns.wait_status("the fetcher to watch the API", &[], |st| {
        st.stdout.contains("news: api")
    });
    let d2 = ns.upload("v2");
    ns.x(&["hot-patch", "demo", &d2, "--wait", "30"]).ok();
    assert!(get(&url).unwrap().contains("version: v2"));
    // What the token allows: the app's release ConfigMap, not another one, not a Secret.
    let sa = format!("system:serviceaccount:{}:demo-fetcher", ns.name);
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--as", &sa]);
        ns.k(&full).stdout.trim().to_string()
    };
    assert_eq!(can(&["watch", "configmaps/demo-release"]), "yes");
    assert_eq!(can(&["get", "configmaps/other-release"]), "no");
    assert_eq!(can(&["get", "secrets/demo-store"]), "no");
    assert_eq!(can(&["patch", "configmaps/demo-release"]), "no");

    // Without the binding the watch is forbidden: a new pod falls back and says why.
    ns.k(&["delete", "rolebinding", "demo-fetcher"]).ok();
    ns.k(&["delete", "pod", "-l", "aether.dev/app=demo", "--wait=false"])
        .ok();
    ns.wait_status("the new pod to fall back to the volumes", &[], |st| {
        st.stdout
            .contains("news: volumes (the API watch failed: 403")
            && st.stdout.matches("news:").count() == 1
    });
    let d3 = ns.upload("v3");
    ns.x(&["hot-patch", "demo", &d3, "--wait", "30"]).ok();
    assert!(get(&url).unwrap().contains("version: v3"));
}

/// The loop run as a user bound only to the Role `render --developer-role` prints (through a
/// kubeconfig that impersonates that user): deploy, hot-patch, hot-status, logs, down.
#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn a_developer_with_only_the_documented_role_runs_the_loop() {
    let ns = Ns::new("rbac");
    let user = format!("aether-t-dev-{}", std::process::id());
    // An admin makes the namespace and binds the Role; the developer does the rest.
    ns.k(&["create", "namespace", &ns.name]).ok();
    let rbac = ns.x(&["render", "--developer-role", &user]).ok().stdout;
    let mut c = Command::new("kubectl");
    c.args(["apply", "-f", "-"]);
    pipe(c, &rbac).ok();
    // The admin's kubeconfig, impersonating the developer (`as`, kubectl's `--as`).
    let kubeconfig = ns.project.path().join("dev.kubeconfig");
    let mut cfg: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap()).unwrap(),
    )
    .unwrap();
    for u in cfg["users"].as_array_mut().unwrap() {
        u["user"]["as"] = user.clone().into();
    }
    std::fs::write(&kubeconfig, serde_norway::to_string(&cfg).unwrap()).unwrap();
    let as_dev = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args)
            .env("AETHER_PROJECT_DIR", ns.project.path())
            .env_remove("AETHER_S3_ENDPOINT");
        for (k, v) in ns.env() {
            c.env(k, v);
        }
        c.env("KUBECONFIG", &kubeconfig);
        run(c)
    };
    // The kubeconfig really is that user, with no more rights than the Role.
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["auth", "can-i", "create", "namespaces"]);
    assert_eq!(run(c).stdout.trim(), "no");
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig").arg(&kubeconfig).args([
        "auth",
        "can-i",
        "get",
        "secrets",
        "-n",
        "kube-system",
    ]);
    assert_eq!(run(c).stdout.trim(), "no");

    let d = as_dev(&["deploy-sample", "demo", ns.app("v1").to_str().unwrap()]).ok();
    let url = d.last("url");
    assert!(get(&url).unwrap().contains("version: v1"));
    let d2 = as_dev(&["hot-upload", "demo", ns.app("v2").to_str().unwrap()])
        .ok()
        .last("digest");
    as_dev(&["hot-patch", "demo", &d2, "--wait", "30"]).ok();
    assert!(get(&url).unwrap().contains("version: v2"));
    let st = as_dev(&["hot-status", "demo"]).ok();
    assert!(st.stdout.contains("(in sync)"), "{}", st.stdout);
    let logs = as_dev(&["logs", "demo", "--fetcher"]).ok();
    assert!(logs.stdout.contains("[fetcher]"), "{}", logs.all());
    as_dev(&["down", "demo"]).ok();
    let mut c = Command::new("kubectl");
    c.args([
        "delete",
        "clusterrolebinding",
        &format!("aether-developer-nodes:{user}"),
    ]);
    run(c).ok();
}
