//! `bootstrap` and `doctor` against the recording shim (stateful: what one run applies, the
//! next run sees), a real S3 server and a real TCP listener standing in for Postgres.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A PATH holding only the shim's directory and links to the named real tools.
fn restricted_path(shim: &Shim, real: &[&str]) -> String {
    let dir = shim.dir.parent().unwrap().join("realbin");
    fs::create_dir_all(&dir).unwrap();
    for tool in real {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let p = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(!p.is_empty(), "{tool} not found");
        let _ = std::os::unix::fs::symlink(p, dir.join(tool));
    }
    format!("{}:{}", shim.bin.display(), dir.display())
}

fn without_microk8s(shim: &Shim) {
    fs::remove_file(shim.bin.join("microk8s")).unwrap();
    fs::remove_file(shim.bin.join("kubectl")).unwrap();
}

fn microk8s_only(shim: &Shim) {
    fs::write(shim.dir.join("disabled-hostpath-storage"), "").unwrap();
    fs::remove_file(shim.dir.join("namespace-aether-system.json")).unwrap();
}

fn mutating(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| {
            c.contains(" apply ")
                || c.contains(" enable ")
                || c.contains("snap ")
                || c.contains(" start")
        })
        .cloned()
        .collect()
}

fn write_config(project: &Path) {
    fs::create_dir_all(project.join(".aether")).unwrap();
    let cfg = serde_json::json!({
        "store": {"endpoint": "http://127.0.0.1:30900", "access_key": "aether-abc", "secret_key": SK,
                  "read_access_key": "aether-read", "read_secret_key": SK},
        "database_url": format!("postgres://aether:{SK}@127.0.0.1:30432/aether"),
        "control": {"url": "http://127.0.0.1:30901", "cluster_url": "http://aether-control:8090",
                    "admin_token": SK},
    });
    fs::write(project.join(".aether/config.json"), cfg.to_string()).unwrap();
}

#[test]
fn dry_run_plans_for_three_starting_states() {
    let t = tempfile::tempdir().unwrap();
    // The store image is not built here: the plan says it will be (or, with a registry image
    // named, that it need not).
    let none = t.path().join("no-store-image.tar").display().to_string();
    let no_control = t.path().join("no-control-image.tar").display().to_string();
    let plan = |prepare: &dyn Fn(&Shim, &Path), image: Option<&str>| -> String {
        let shim = Shim::new();
        let project = t.path().join(format!("p{}", rand_suffix()));
        fs::create_dir_all(&project).unwrap();
        prepare(&shim, &project);
        let mut env = vec![
            ("AETHER_STORE_IMAGE_ARCHIVE", none.clone()),
            ("AETHER_CONTROL_IMAGE_ARCHIVE", no_control.clone()),
        ];
        if let Some(i) = image {
            env.push(("AETHER_STORE_IMAGE", i.to_string()));
            env.push(("AETHER_CONTROL_IMAGE", CONTROL_IMAGE.to_string()));
        }
        let r = shim.run(&project, &env, &["bootstrap", "--dry-run"]).ok();
        assert!(
            mutating(&shim.calls()).is_empty(),
            "dry run changed something: {:?}",
            shim.calls()
        );
        assert!(r.stdout.contains("dry run: nothing was changed"));
        assert!(!r.all().contains(SK));
        r.stdout
    };
    let nothing = plan(&|s, _| without_microk8s(s), None);
    insta::assert_snapshot!("plan_nothing_installed", nothing);
    let mk = plan(&|s, _| microk8s_only(s), None);
    insta::assert_snapshot!("plan_microk8s_only", mk);
    let up = plan(
        &|s, p| {
            write_config(p);
            fs::write(s.dir.join("obj-deployment-aether-store"), "").unwrap();
            fs::write(s.dir.join("obj-statefulset-postgres"), "").unwrap();
            let control = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "aether-control"},
                "spec": {"template": {"spec": {"containers": [{"image": CONTROL_IMAGE}]}}}});
            fs::write(
                s.dir.join("deployment-aether-control.json"),
                control.to_string(),
            )
            .unwrap();
        },
        Some("registry.example/aether/store:1"),
    );
    insta::assert_snapshot!("plan_everything_up", up);
}

/// A control plane image in a registry: nothing to build or load.
const CONTROL_IMAGE: &str = "registry.example/aether/control:1";

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn bootstrap_then_again_changes_nothing_the_second_time() {
    let t = tempfile::tempdir().unwrap();
    // Stands in for MinIO once bootstrap's Job made its read-only user.
    const READER: &str = "aether-read-t";
    const READER_SK: &str = "reader-secret-0123456789";
    let server = aether_s3local::Server::start_with(
        &t.path().join("s3"),
        &["127.0.0.1:0".parse().unwrap()],
        AK,
        SK,
        Some(std::sync::Arc::new(|ak: &str| {
            (ak == READER).then(|| aether_s3local::ReadOnly {
                secret_key: READER_SK.into(),
                prefix: "artifacts/".into(),
            })
        })),
    )
    .unwrap();
    let db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db_url = format!("postgres://aether:{SK}@{}/aether", db.local_addr().unwrap());
    let mut env = store_env(&server.endpoint(), SK);
    env.push(("AETHER_DATABASE_URL", db_url.clone()));
    env.push(("AETHER_S3_READ_ACCESS_KEY", READER.into()));
    env.push(("AETHER_S3_READ_SECRET_KEY", READER_SK.into()));
    let shim = Shim::new();
    microk8s_only(&shim);
    let project = t.path().join("project");
    fs::create_dir_all(&project).unwrap();

    // MinIO, the store whose read-only user bootstrap makes with a Job (ours derives keys).
    let first = shim
        .run(
            &project,
            &env,
            &["bootstrap", "--yes", "--store", "minio", "--no-control"],
        )
        .ok();
    assert!(first.stderr.contains("bootstrap done"), "{}", first.stderr);
    let calls = shim.calls();
    assert!(
        calls.contains(&"microk8s enable hostpath-storage".to_string()),
        "{calls:?}"
    );
    assert!(!calls.contains(&"microk8s enable dns".to_string()));
    assert!(calls.contains(
        &"microk8s kubectl -n aether-system rollout status deployment/minio --timeout=300s"
            .to_string()
    ));
    assert!(calls.contains(
        &"microk8s kubectl -n aether-system rollout status statefulset/postgres --timeout=300s"
            .to_string()
    ));
    let applied = shim.stdins().join("\n");
    for want in [
        "kind: Namespace",
        "name: minio",
        "kind: StatefulSet",
        "name: aether-database",
    ] {
        assert!(applied.contains(want), "{want} not applied");
    }
    // Credentials travel on stdin and into a 0600 file, never on a command line or to the terminal.
    assert!(applied.contains(&format!("MINIO_ROOT_PASSWORD: \"{SK}\"")));
    // The pods' read-only MinIO user, created by a Job from the Secret.
    assert!(applied.contains(&format!("AETHER_READ_PASSWORD: \"{READER_SK}\"")));
    assert!(applied.contains("kind: Job") && applied.contains("mc admin user add"));
    for c in &calls {
        assert!(
            !c.contains(SK) && !c.contains(READER_SK),
            "secret on a command line: {c}"
        );
    }
    assert!(!first.all().contains(SK) && !first.all().contains(READER_SK));
    let cfg_path = project.join(".aether/config.json");
    assert_eq!(
        fs::metadata(&cfg_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cfg: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    assert_eq!(cfg["store"]["secret_key"], SK);
    assert_eq!(cfg["store"]["read_access_key"], READER);
    assert_eq!(cfg["database_url"], db_url.as_str());
    // The bucket exists now: the store answered with our credentials.
    assert!(aether_artifact::store::Store::new(
        aether_artifact::store::PartialStore::from_lookup(|k| env
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone()))
        .finish()
        .unwrap()
    )
    .unwrap()
    .bucket_exists()
    .unwrap());

    fs::remove_file(shim.dir.join("calls.log")).unwrap();
    let second = shim
        .run(
            &project,
            &env,
            &["bootstrap", "--yes", "--store", "minio", "--no-control"],
        )
        .ok();
    assert!(
        second.stdout.contains("plan: nothing to do"),
        "{}",
        second.stdout
    );
    assert!(
        second.stderr.contains("everything was already in place"),
        "{}",
        second.stderr
    );
    assert!(
        mutating(&shim.calls()).is_empty(),
        "second run changed something: {:?}",
        shim.calls()
    );
}

#[test]
fn sudo_steps_are_not_run_without_yes_or_a_terminal() {
    let t = tempfile::tempdir().unwrap();
    let shim = Shim::new();
    without_microk8s(&shim);
    let r = shim.run(t.path(), &[], &["bootstrap"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("stopped before a sudo step") && r.stderr.contains("--yes"),
        "{}",
        r.stderr
    );
    assert!(mutating(&shim.calls()).is_empty());
}

fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
}

#[test]
fn doctor_reports_each_state() {
    // A fresh laptop: only Rust. Local target; node is required there and missing.
    let t = tempfile::tempdir().unwrap();
    let shim = Shim::new();
    without_microk8s(&shim);
    let path = restricted_path(&shim, &["cargo"]);
    let r = shim.run_path(t.path(), &[], &path, &["doctor"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(line(&r.stdout, "cargo").starts_with("ok"));
    assert!(line(&r.stdout, "node").starts_with("missing"));
    assert!(
        line(&r.stdout, "microk8s").starts_with("missing")
            && line(&r.stdout, "microk8s").ends_with("(optional)")
    );
    assert!(r
        .stdout
        .contains("fix: sudo snap install microk8s --classic --channel=1.33/stable"));
    assert!(
        r.stderr.contains("required pieces missing or broken: node"),
        "{}",
        r.stderr
    );

    // Everything up, microk8s target.
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut env = store_env(&server.endpoint(), SK);
    env.push((
        "AETHER_DATABASE_URL",
        format!("postgres://aether:{SK}@{}/aether", db.local_addr().unwrap()),
    ));
    aether_artifact::store::Store::new(
        aether_artifact::store::PartialStore::from_lookup(|k| {
            env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        })
        .finish()
        .unwrap(),
    )
    .unwrap()
    .ensure_bucket()
    .unwrap();
    let shim = Shim::new();
    // The fetcher image deploy-sample would use is the one in the archive, by its content tag
    // (doctor looked for the bare version tag before): the node has exactly that one.
    let archive = t.path().join("fetcher.tar");
    image_archive(&archive, "docker.io/aether/fetcher:0.1.0-0123456789ab");
    fs::write(
        shim.dir.join("images.txt"),
        "docker.io/aether/fetcher:0.1.0-0123456789ab\n",
    )
    .unwrap();
    env.push((
        "AETHER_FETCHER_IMAGE_ARCHIVE",
        archive.display().to_string(),
    ));
    let path = restricted_path(&shim, &["cargo", "node"]);
    let r = shim.run_path(
        t.path(),
        &env,
        &path,
        &["--target", "microk8s", "doctor", "--json"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let checks: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    for c in &checks {
        if c["required"] == true {
            assert_eq!(c["status"], "ok", "{c}");
        }
    }
    let by = |n: &str| checks.iter().find(|c| c["name"] == n).unwrap().clone();
    assert_eq!(by("sidecar")["status"], "ok");
    assert_eq!(by("database")["status"], "ok");
    assert!(by("store")["detail"]
        .as_str()
        .unwrap()
        .contains("credentials valid"));
    assert!(!r.all().contains(SK));

    // Broken: MicroK8s too old for native sidecars, wrong store secret, no namespace.
    let shim = Shim::new();
    fs::write(
        shim.dir.join("microk8s-version"),
        "MicroK8s v1.28.15 revision 7001\n",
    )
    .unwrap();
    fs::remove_file(shim.dir.join("namespace-aether-system.json")).unwrap();
    let mut env = store_env(&server.endpoint(), "wrong-secret");
    env.push((
        "AETHER_DATABASE_URL",
        "postgres://aether:pw@127.0.0.1:1/aether".into(),
    ));
    let r = shim.run_path(t.path(), &env, &path, &["--target", "microk8s", "doctor"]);
    assert_ne!(r.code, 0);
    assert!(
        line(&r.stdout, "microk8s").starts_with("broken")
            && r.stdout
                .contains("sudo snap refresh microk8s --channel=1.33/stable"),
        "{}",
        r.stdout
    );
    assert!(
        line(&r.stdout, "store").starts_with("broken")
            && line(&r.stdout, "store").contains("rejected the credentials"),
        "{}",
        r.stdout
    );
    assert!(line(&r.stdout, "database").starts_with("broken"));
    assert!(
        line(&r.stdout, "cluster").starts_with("broken")
            && r.stdout.contains("fix: cargo xtask k8s-start")
    );
    assert!(!r.all().contains("wrong-secret"));
    let _ = PathBuf::new();
}

/// An OCI archive holding just the index that names `image` (all bootstrap reads of it).
fn image_archive(path: &Path, image: &str) {
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", "0".repeat(64)), "size": 1,
        "annotations": {"io.containerd.image.name": image}}]});
    let mut b = tar::Builder::new(Vec::new());
    let body = index.to_string();
    let mut h = tar::Header::new_ustar();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "index.json", body.as_bytes())
        .unwrap();
    fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// `microk8s ctr image import` loads one node: on a MicroK8s of two, bootstrap refuses before
/// importing or deploying the store, and names the fixes.
#[test]
fn a_multi_node_microk8s_is_refused_before_the_store_image_is_loaded() {
    let t = tempfile::tempdir().unwrap();
    let shim = Shim::new();
    microk8s_only(&shim);
    let nodes = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"metadata": {"name": "a"}, "status": {}}, {"metadata": {"name": "b"}, "status": {}}]});
    fs::write(shim.dir.join("nodes.json"), nodes.to_string()).unwrap();
    let archive = t.path().join("store.tar");
    image_archive(&archive, "docker.io/aether/store:0.1.0-abc");
    let project = t.path().join("project");
    fs::create_dir_all(&project).unwrap();
    let env = [("AETHER_STORE_IMAGE_ARCHIVE", archive.display().to_string())];
    let r = shim.run(&project, &env, &["bootstrap", "--yes"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("this MicroK8s has 2 nodes")
            && r.stderr.contains("AETHER_STORE_IMAGE")
            && r.stderr.contains("on every node"),
        "{}",
        r.stderr
    );
    let calls = shim.calls();
    assert!(
        !calls.iter().any(|c| c.contains("ctr image import")),
        "{calls:?}"
    );
    assert!(
        !shim.stdins().join("\n").contains("name: aether-store"),
        "the store was deployed"
    );
}

/// `--store external`: nothing of a store is deployed; the given store is checked (the bucket
/// made) and its endpoint and keys saved; Postgres is still bootstrap's.
#[test]
fn an_external_store_is_used_not_deployed() {
    let t = tempfile::tempdir().unwrap();
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut env = store_env(&server.endpoint(), SK);
    env.push((
        "AETHER_DATABASE_URL",
        format!("postgres://aether:{SK}@{}/aether", db.local_addr().unwrap()),
    ));
    let shim = Shim::new();
    microk8s_only(&shim);
    let project = t.path().join("project");
    fs::create_dir_all(&project).unwrap();
    let plan = shim
        .run(
            &project,
            &env,
            &[
                "bootstrap",
                "--store",
                "external",
                "--dry-run",
                "--no-control",
            ],
        )
        .ok();
    assert!(
        !plan.stdout.contains("deploy the store") && !plan.stdout.contains("MinIO"),
        "{}",
        plan.stdout
    );
    let r = shim
        .run(
            &project,
            &env,
            &["bootstrap", "--yes", "--store", "external", "--no-control"],
        )
        .ok();
    assert!(r.stderr.contains("bootstrap done"), "{}", r.all());
    let applied = shim.stdins().join("\n");
    assert!(applied.contains("name: postgres"));
    assert!(
        !applied.contains("aether-store") && !applied.contains("minio"),
        "a store was deployed"
    );
    let calls = shim.calls();
    assert!(
        !calls.iter().any(|c| c.contains("ctr image import")),
        "{calls:?}"
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(project.join(".aether/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["store"]["endpoint"], server.endpoint().as_str());
    // No read-only key was given, so none was invented: pods of a cluster deploy are refused
    // until the operator gives one (or --allow-writer-credentials).
    assert!(cfg["store"]["read_access_key"].is_null(), "{cfg}");
    assert!(server.requests("PUT") >= 1, "the bucket was not made");
    assert!(!r.all().contains(SK));
}
