//! `bootstrap --target kube` from nothing on the real cluster: the store it builds and imports
//! (ours, no registry), Postgres from the image built of this machine's Debian package, the
//! sample answering a real query, and `uninstall` leaving the namespace as it found it.

use super::*;

/// Loads the Postgres image `cargo xtask test --cluster` built into the nodes, with the same
/// import command the fetcher's goes through.
fn import_postgres() {
    let (Ok(archive), Ok(template)) = (
        std::env::var("AETHER_TEST_POSTGRES_ARCHIVE"),
        std::env::var("AETHER_IMAGE_IMPORT"),
    ) else {
        return;
    };
    let words: Vec<String> = template
        .split_whitespace()
        .map(|w| w.replace("{archive}", &archive))
        .collect();
    let mut c = Command::new(&words[0]);
    c.args(&words[1..]);
    run(c).ok();
}

fn namespace_exists(ns: &Ns) -> bool {
    run({
        let mut c = Command::new("kubectl");
        c.args(["get", "namespace", &ns.name]);
        c
    })
    .code
        == 0
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn bootstrap_twice_deploy_query_the_database_and_uninstall() {
    let ns = Ns::new("boot");
    import_postgres();
    assert!(!namespace_exists(&ns));

    // The plan on a cluster with nothing of ours, and nothing changed.
    let plan = ns.x(&["bootstrap", "--dry-run"]).ok();
    for step in [
        "create namespace",
        "generate store and database credentials",
        "deploy the store (aether-store)",
        "deploy Postgres",
    ] {
        assert!(
            plan.stdout.contains(step),
            "{step} not planned:\n{}",
            plan.stdout
        );
    }
    assert!(plan.stdout.contains("dry run: nothing was changed"));
    assert!(!namespace_exists(&ns), "a dry run created the namespace");
    assert!(!ns.project.path().join(".aether/config.json").exists());

    let first = ns.x(&["bootstrap"]).ok();
    assert!(first.stderr.contains("bootstrap done"), "{}", first.all());
    let store_pod = |ns: &Ns| {
        ns.k(&[
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=aether-store",
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ])
        .ok()
        .stdout
    };
    let before = (
        store_pod(&ns),
        ns.k(&[
            "get",
            "deployment/aether-store",
            "statefulset/postgres",
            "-o",
            "jsonpath={.items[*].metadata.generation}",
        ])
        .ok()
        .stdout,
    );

    let second = ns.x(&["bootstrap"]).ok();
    assert!(
        second.stdout.contains("plan: nothing to do"),
        "{}",
        second.all()
    );
    assert!(
        second.stderr.contains("everything was already in place"),
        "{}",
        second.all()
    );
    let after = (
        store_pod(&ns),
        ns.k(&[
            "get",
            "deployment/aether-store",
            "statefulset/postgres",
            "-o",
            "jsonpath={.items[*].metadata.generation}",
        ])
        .ok()
        .stdout,
    );
    assert_eq!(
        before, after,
        "the second bootstrap changed the store or Postgres"
    );

    // doctor sees both services from this machine.
    let doc = ns.x(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> =
        serde_json::from_str(&doc.stdout).unwrap_or_else(|_| panic!("{}", doc.all()));
    let by = |n: &str| checks.iter().find(|c| c["name"] == n).cloned().unwrap();
    assert_eq!(by("store")["status"], "ok", "{}", doc.all());
    assert_eq!(by("database")["status"], "ok", "{}", doc.all());
    assert_eq!(by("platform")["status"], "ok", "{}", doc.all());

    // The sample against the in-cluster store, its pods keyed for their app only, and its
    // database line from a real query through the Service.
    let d = ns.x(&["deploy-sample", "demo"]).ok();
    assert!(
        d.stderr.contains("a read-only key for this app alone"),
        "{}",
        d.all()
    );
    let url = d.last("url");
    ns.wait_body(&url, "database: ok", PATIENCE * 2);

    let sample = ns.project.path().join("examples/sample-node");
    let server = sample.join("server.js");
    let src = std::fs::read_to_string(&server).unwrap();
    std::fs::write(
        &server,
        src.replace("const VERSION = 'v1';", "const VERSION = 'v2';"),
    )
    .unwrap();
    let d2 = ns
        .x(&["hot-upload", "demo", sample.to_str().unwrap()])
        .ok()
        .last("digest");
    let shape = ns.shape();
    ns.x(&["hot-patch", "demo", &d2, "--wait", "120"]).ok();
    let body = ns.wait_body(&url, "version: v2", PATIENCE);
    assert!(body.contains("database: ok"), "{body}");
    assert_eq!(ns.shape(), shape, "the hot-patch rolled something out");
    let st = ns.x(&["hot-status", "demo"]).ok();
    assert!(
        st.stdout.contains("database: 127.0.0.1:30432 reachable"),
        "{}",
        st.stdout
    );

    // Down and uninstall: the namespace bootstrap created goes with what was in it.
    ns.x(&["down", "demo"]).ok();
    let u = ns.x(&["uninstall", "--delete-data"]).ok();
    assert!(u.stderr.contains("deleted namespace"), "{}", u.all());
    assert!(!namespace_exists(&ns));
}
