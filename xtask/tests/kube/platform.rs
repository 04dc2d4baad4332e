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
        "deploy the control plane",
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
    // What a change to the store or Postgres would show: the store pod's UID, their generations.
    let shape = |ns: &Ns| {
        (
            store_pod(ns),
            ns.k(&[
                "get",
                "deployment/aether-store",
                "statefulset/postgres",
                "deployment/aether-control",
                "-o",
                "jsonpath={.items[*].metadata.generation}",
            ])
            .ok()
            .stdout,
        )
    };
    let before = shape(&ns);

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
    let after = shape(&ns);
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
    assert_eq!(by("control")["status"], "ok", "{}", doc.all());

    // The sample against the in-cluster store, its pods holding no store key (read URLs come
    // from the control plane), and its database line from a real query through the Service.
    let d = ns.x(&["deploy-sample", "demo"]).ok();
    assert!(
        d.stderr.contains("demo's pods hold no store key"),
        "{}",
        d.all()
    );
    let fetcher = ns
        .k(&[
            "get",
            "deployment/demo",
            "-o",
            "jsonpath={.spec.template.spec.initContainers[0]}",
        ])
        .ok()
        .stdout;
    assert!(
        !fetcher.contains("envFrom") && fetcher.contains("AETHER_CONTROL_URL"),
        "{fetcher}"
    );
    let secrets = ns.k(&["get", "secrets", "-o", "name"]).ok().stdout;
    assert!(
        !secrets.contains("demo-store"),
        "a store Secret for demo: {secrets}"
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
    assert!(
        st.stdout
            .contains("control plane: release #2 of 2 registered"),
        "{}",
        st.stdout
    );
    control_plane_checks(&ns, &d2);
    control_plane_down(&ns, &url, &sample, &src);

    // Down and uninstall: the namespace bootstrap created goes with what was in it.
    ns.x(&["down", "demo"]).ok();
    let u = ns.x(&["uninstall", "--delete-data"]).ok();
    assert!(u.stderr.contains("deleted namespace"), "{}", u.all());
    assert!(!namespace_exists(&ns));
}

/// The control plane of a bootstrapped namespace: only the API server's word for a pod token
/// of the right audience and app gets a URL; its history survives its own restart and a CLI
/// machine that lost its configuration.
fn control_plane_checks(ns: &Ns, d2: &str) {
    use aether_artifact::control::{Client, ControlErrorKind};
    use aether_artifact::store::Secret;
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ns.project.path().join(".aether/config.json")).unwrap(),
    )
    .unwrap();
    let url = cfg["control"]["url"].as_str().unwrap().to_string();
    let demo = aether_artifact::AppName::parse("demo").unwrap();
    let key = format!("artifacts/demo/{d2}/app.tar.gz");
    let token = |sa: &str, audience: &str| {
        let t = ns
            .k(&[
                "create",
                "token",
                sa,
                "--audience",
                audience,
                "--duration",
                "10m",
            ])
            .ok()
            .stdout;
        Client::with_token(
            &url,
            Secret::new(t.trim()),
            std::time::Duration::from_secs(10),
        )
    };
    let urls = token("demo-fetcher", "aether-control")
        .read_urls(&demo, std::slice::from_ref(&key))
        .unwrap();
    assert_eq!(urls.urls.len(), 1);
    ns.k(&["create", "serviceaccount", "other-fetcher"]).ok();
    let e = token("other-fetcher", "aether-control")
        .read_urls(&demo, std::slice::from_ref(&key))
        .unwrap_err();
    assert_eq!(e.kind, ControlErrorKind::Forbidden, "{e}");
    // A token for the API server (its default audience) is not one for the control plane.
    let api = ns
        .k(&["create", "token", "demo-fetcher", "--duration", "10m"])
        .ok()
        .stdout;
    let e = Client::with_token(
        &url,
        Secret::new(api.trim()),
        std::time::Duration::from_secs(10),
    )
    .read_urls(&demo, &[key])
    .unwrap_err();
    assert_eq!(e.kind, ControlErrorKind::Unauthenticated, "{e}");

    // The history as `rollback --to` lists it, once the control plane answers (a restarted
    // one answers when its new pod is ready and the Service's endpoints follow).
    let listed = |ns: &Ns| -> Vec<u64> {
        aether_testkit::wait_until("the control plane's history", PATIENCE, || {
            let r = ns.x(&["rollback", "demo", "--to", "--json"]);
            let v: serde_json::Value =
                serde_json::from_str(r.stdout.trim()).map_err(|_| r.all())?;
            if v["source"] != "control-plane" {
                return Err(v.to_string());
            }
            Ok(v["releases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["seq"].as_u64().unwrap())
                .collect())
        })
    };
    assert_eq!(listed(ns), [2, 1]);
    ns.k(&["rollout", "restart", "deployment/aether-control"])
        .ok();
    ns.k(&[
        "rollout",
        "status",
        "deployment/aether-control",
        "--timeout=120s",
    ])
    .ok();
    assert_eq!(listed(ns), [2, 1], "after a restart of the control plane");
    // A CLI machine that lost .aether/: bootstrap recovers the admin token from the cluster.
    std::fs::remove_file(ns.project.path().join(".aether/config.json")).unwrap();
    let b = ns.x(&["bootstrap"]).ok();
    assert!(
        b.stdout.contains("read the existing credentials"),
        "{}",
        b.all()
    );
    assert_eq!(
        listed(ns),
        [2, 1],
        "from a CLI machine that lost its configuration"
    );
}

/// A control plane that is down: the pods keep serving their release, the next one waits with
/// the cause in hot-status, and goes live once the control plane is back.
fn control_plane_down(ns: &Ns, url: &str, sample: &std::path::Path, src: &str) {
    let server = sample.join("server.js");
    std::fs::write(
        &server,
        src.replace("const VERSION = 'v1';", "const VERSION = 'v3';"),
    )
    .unwrap();
    ns.k(&["scale", "deployment/aether-control", "--replicas=0"])
        .ok();
    ns.k(&[
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "app.kubernetes.io/name=aether-control",
        "--timeout=120s",
    ])
    .ok();
    let up = ns.x(&["hot-upload", "demo", sample.to_str().unwrap()]).ok();
    assert!(
        up.stderr.contains("not registered with the control plane"),
        "{}",
        up.all()
    );
    let d3 = up.last("digest");
    let patch = ns.x(&["hot-patch", "demo", &d3, "--wait", "10"]);
    assert_ne!(patch.code, 0, "{}", patch.all());
    let body = get(url).unwrap_or_default();
    assert!(
        body.contains("version: v2"),
        "the pod stopped serving: {body}"
    );
    let st = ns.x(&["hot-status", "demo", "--json"]);
    let v: serde_json::Value = serde_json::from_str(st.stdout.trim()).unwrap();
    let cause = v["pods"][0]["last_error"].as_str().unwrap_or_default();
    assert!(cause.contains("control plane"), "{v}");
    assert!(v["control"]["error"].is_string(), "{v}");

    ns.k(&["scale", "deployment/aether-control", "--replicas=1"])
        .ok();
    ns.wait_body(url, "version: v3", PATIENCE * 4);
    // Registering again fills the gap the outage left.
    let again = ns
        .x(&["hot-upload", "demo", sample.to_str().unwrap(), "--json"])
        .ok();
    let again: serde_json::Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert_eq!(again["registered"], 3, "{again}");
}

/// Volumes this test provisions by hand, as an admin of a cluster whose StorageClass has no
/// provisioner does: removed with their directories when the test ends, pass or fail.
struct Volumes {
    class: String,
    pvs: Vec<String>,
    dir: std::path::PathBuf,
}

impl Drop for Volumes {
    fn drop(&mut self) {
        let mut c = Command::new("kubectl");
        c.args([
            "delete",
            "--ignore-not-found",
            "--wait=false",
            &format!("storageclass/{}", self.class),
        ]);
        c.args(self.pvs.iter().map(|p| format!("persistentvolume/{p}")));
        let _ = c.output();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Whether the cluster's node is this machine (k8s-local): only then can a test lay out its
/// volumes' directories.
fn node_is_here() -> bool {
    let out = run({
        let mut c = Command::new("kubectl");
        c.args([
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.addresses[?(@.type==\"InternalIP\")].address}",
        ]);
        c
    });
    let ips: Vec<std::net::IpAddr> = out
        .stdout
        .split_whitespace()
        .filter_map(|a| a.parse().ok())
        .collect();
    ips.len() == 1 && std::net::TcpListener::bind((ips[0], 0)).is_ok()
}

#[test]
#[ignore = "needs a real cluster: cargo xtask test --cluster"]
fn on_volumes_of_a_storage_class_the_data_outlives_the_pods() {
    if !aether_testkit::require(
        aether_testkit::is_root() && node_is_here(),
        "the cluster's node is not this machine, or not root: the test cannot provision volumes",
    ) {
        return;
    }
    let ns = Ns::new("vol");
    import_postgres();
    let vols = Volumes {
        class: format!("aether-test-{}", std::process::id()),
        pvs: vec![
            format!("{}-store", ns.name),
            format!("{}-postgres", ns.name),
        ],
        dir: std::path::PathBuf::from(format!("/var/lib/aether-test-volumes/{}", ns.name)),
    };
    // (PV, claim it is for, size, owner: the store's uid and Postgres' uid; hostPath volumes
    // get no fsGroup, so their owner is set here as an admin would.)
    let layout = [
        (&vols.pvs[0], "aether-store-data", "10Gi", 65532u32),
        (&vols.pvs[1], "data-postgres-0", "5Gi", 70),
    ];
    let class = serde_json::json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": vols.class}, "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "Immediate"});
    apply(&class, false).ok();
    for (pv, claim, size, uid) in layout {
        let dir = vols.dir.join(claim);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": vols.class, "hostPath": {"path": dir, "type": "Directory"},
                "claimRef": {"namespace": ns.name, "name": claim}}});
        apply(&obj, false).ok();
    }

    let b = ns.x(&["bootstrap", "--storage-class", &vols.class]).ok();
    assert!(
        b.stdout
            .contains(&format!("a 10Gi volume of class {}", vols.class)),
        "{}",
        b.stdout
    );
    for claim in ["aether-store-data", "data-postgres-0"] {
        let phase = ns
            .k(&["get", "pvc", claim, "-o", "jsonpath={.status.phase}"])
            .ok()
            .stdout;
        assert_eq!(phase, "Bound", "{claim}");
    }
    let d = ns.x(&["deploy-sample", "demo"]).ok();
    let (url, digest) = (d.last("url"), d.last("digest"));
    ns.wait_body(&url, "database: ok", PATIENCE * 2);
    let object = vols.dir.join(format!(
        "aether-store-data/aether-artifacts/artifacts/demo/{digest}/app.tar.gz"
    ));
    assert!(object.exists(), "{} is not on the volume", object.display());

    // Both pods replaced: the store still has the artifact, Postgres its data directory (no
    // second initdb), and the sample still answers a query.
    ns.k(&[
        "delete",
        "pod",
        "-l",
        "app.kubernetes.io/name in (aether-store,postgres)",
        "--wait=true",
    ])
    .ok();
    ns.k(&[
        "rollout",
        "status",
        "deployment/aether-store",
        "--timeout=120s",
    ])
    .ok();
    ns.k(&[
        "rollout",
        "status",
        "statefulset/postgres",
        "--timeout=120s",
    ])
    .ok();
    let again = ns
        .x(&[
            "hot-upload",
            "demo",
            ns.project
                .path()
                .join("examples/sample-node")
                .to_str()
                .unwrap(),
        ])
        .ok();
    assert!(
        again.stderr.contains("already in the store"),
        "{}",
        again.all()
    );
    let pg_log =
        ns.k(&["logs", "postgres-0"]).ok().stdout + &ns.k(&["logs", "postgres-0"]).ok().stderr;
    assert!(
        !pg_log.contains("initialised"),
        "Postgres initialised its data again:\n{pg_log}"
    );
    ns.wait_body(&url, "database: ok", PATIENCE * 2);

    ns.x(&["down", "demo"]).ok();
    let u = ns.x(&["uninstall", "--delete-data"]).ok();
    assert!(u.stderr.contains("deleted namespace"), "{}", u.all());
}
