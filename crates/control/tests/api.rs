//! The real `aether-control` binary against a real S3 server (signatures checked) and real
//! databases (SQLite, and Postgres when installed): registration, history that survives a
//! restart, pod identity, and URLs that read exactly the pod's own app.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aether_artifact::control::{local_token, Client, ControlErrorKind, Register, ENV_ADMIN_TOKEN};
use aether_artifact::store::{Secret, Store, StoreConfig};
use aether_artifact::{object_key, AppName, Digest};
use aether_testkit::{free_port, wait_for, PATIENCE};

const ADMIN: &str = "admin-secret-for-tests";
const STORE_SECRET: &str = "store-owner-secret";

struct Control {
    child: Child,
    port: u16,
}

impl Control {
    fn start(db_url: &str, store: &str) -> Control {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_aether-control"))
            .args(["--auth", "local", "--derive-read-keys"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env(ENV_ADMIN_TOKEN, ADMIN)
            .env("AETHER_CONTROL_DATABASE_URL", db_url)
            .env("AETHER_S3_ENDPOINT", store)
            .env("AETHER_S3_ACCESS_KEY", "owner")
            .env("AETHER_S3_SECRET_KEY", STORE_SECRET)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting aether-control");
        let c = Control { child, port };
        wait_for(
            "the control plane to answer /healthz",
            PATIENCE,
            || c.admin().health().is_ok(),
            || format!("port {port}"),
        );
        c
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn admin(&self) -> Client {
        Client::with_token(&self.url(), Secret::new(ADMIN), Duration::from_secs(10))
    }

    fn pod(&self, app: &AppName) -> Client {
        Client::with_token(
            &self.url(),
            local_token(app, &Secret::new(ADMIN)),
            Duration::from_secs(10),
        )
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn record(app: &AppName, digest: &Digest) -> String {
    serde_json::json!({
        "schema": "aether.dev/provenance/v1",
        "app": app.as_str(),
        "digest": digest,
        "layers": [],
        "entry_point": "server.js",
        "source": {"dir": "demo", "git": {"commit": "abc123", "dirty": false}},
        "tool": {"name": "aether-dev", "version": "0.1.0"},
        "built_by": "dev@laptop",
        "created_at": "2026-12-03T06:00:00Z",
    })
    .to_string()
}

fn register_body(app: &AppName, digest: Digest) -> Register {
    Register {
        digest,
        deps: None,
        bytes: 42,
        published_by: "dev@laptop".into(),
        git_commit: Some("abc123".into()),
        provenance: record(app, &digest),
        signature: None,
    }
}

fn s3(dir: &Path) -> aether_s3local::Server {
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    aether_s3local::Server::start_with(
        dir,
        &[bind],
        "owner",
        STORE_SECRET,
        Some(aether_store::read_keys(STORE_SECRET)),
    )
    .unwrap()
}

/// The whole flow on one database URL: what every backend must do the same way.
fn history_and_urls(db_url: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let server = s3(&tmp.path().join("s3"));
    let owner = Store::new(StoreConfig {
        endpoint: server.endpoint(),
        region: "us-east-1".into(),
        bucket: "aether-artifacts".into(),
        access_key: "owner".into(),
        secret_key: Secret::new(STORE_SECRET),
        ca_file: None,
    })
    .unwrap();
    owner.ensure_bucket().unwrap();
    let demo = AppName::parse("demo").unwrap();
    let other = AppName::parse("other").unwrap();
    let (d1, d2) = (
        Digest::parse(&"1".repeat(64)).unwrap(),
        Digest::parse(&"2".repeat(64)).unwrap(),
    );
    owner
        .put_bytes(&object_key(&demo, &d1), b"demo bytes")
        .unwrap();
    owner
        .put_bytes(&object_key(&other, &d1), b"other bytes")
        .unwrap();

    let control = Control::start(db_url, &server.endpoint());
    let admin = control.admin();
    let first = admin.register(&demo, &register_body(&demo, d1)).unwrap();
    assert!(first.created);
    assert_eq!(
        (first.entry.seq, first.entry.git_commit.as_deref()),
        (1, Some("abc123"))
    );
    let again = admin.register(&demo, &register_body(&demo, d1)).unwrap();
    assert!(!again.created, "a digest registers once");
    assert_eq!(again.entry, first.entry);
    assert_eq!(
        admin
            .register(&demo, &register_body(&demo, d2))
            .unwrap()
            .entry
            .seq,
        2
    );

    // A record that names another release is refused with a JSON cause.
    let e = admin
        .register(&demo, &register_body(&other, d1))
        .unwrap_err();
    assert!(e.detail.contains("not demo"), "{e}");
    // Only the admin token lists or registers.
    let e = control.pod(&demo).releases(&demo).unwrap_err();
    assert_eq!(e.kind, ControlErrorKind::Unauthenticated, "{e}");

    // A pod of demo gets URLs that read demo's object, and nothing of other's.
    let key = object_key(&demo, &d1);
    let urls = control
        .pod(&demo)
        .read_urls(&demo, std::slice::from_ref(&key))
        .unwrap();
    assert_eq!(urls.urls.len(), 1);
    assert!(
        urls.urls[0].contains("X-Amz-Credential=aether-read-demo"),
        "signed with demo's read key: {}",
        urls.urls[0]
    );
    let body = attohttpc::get(&urls.urls[0]).send().unwrap();
    assert!(body.is_success());
    assert_eq!(body.bytes().unwrap(), b"demo bytes");
    let e = control.pod(&other).read_urls(&demo, &[key]).unwrap_err();
    assert_eq!(e.kind, ControlErrorKind::Forbidden, "{e}");
    let e = control
        .pod(&demo)
        .read_urls(&demo, &[object_key(&other, &d1)])
        .unwrap_err();
    assert_eq!(e.kind, ControlErrorKind::Forbidden, "{e}");
    let forged = Client::with_token(
        &control.url(),
        Secret::new("local.demo.00"),
        Duration::from_secs(5),
    );
    let e = forged
        .read_urls(&demo, &[object_key(&demo, &d1)])
        .unwrap_err();
    assert_eq!(e.kind, ControlErrorKind::Unauthenticated, "{e}");

    // The history survives a restart of the control plane.
    drop(control);
    let control = Control::start(db_url, &server.endpoint());
    let list = control.admin().releases(&demo).unwrap();
    assert_eq!(
        list.iter().map(|e| (e.seq, e.digest)).collect::<Vec<_>>(),
        vec![(2, d2), (1, d1)]
    );
    let apps = control.admin().apps().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(
        (
            apps[0].app.as_str(),
            apps[0].releases,
            apps[0].latest.digest
        ),
        ("demo", 2, d2)
    );
    assert_eq!(control.admin().release(&demo, &d1).unwrap(), list[1]);
    let e = control.admin().release(&other, &d1).unwrap_err();
    assert_eq!(e.kind, ControlErrorKind::NotFound, "{e}");
}

#[test]
fn on_sqlite_history_survives_a_restart_and_urls_are_per_app() {
    let dir = tempfile::tempdir().unwrap();
    history_and_urls(&format!(
        "sqlite:{}",
        dir.path().join("control.db").display()
    ));
}

#[test]
fn on_postgres_history_survives_a_restart_and_urls_are_per_app() {
    if !aether_testkit::require(
        aether_testkit::postgres::bin_dir().is_some(),
        "Postgres is not installed (apt-get install postgresql)",
    ) {
        return;
    }
    let pg = aether_testkit::postgres::Postgres::start();
    history_and_urls(&pg.url());
}

#[test]
fn a_bad_database_url_is_refused_with_the_fix_and_no_password() {
    let out = Command::new(env!("CARGO_BIN_EXE_aether-control"))
        .args(["--auth", "local", "--db-wait", "1"])
        .env(ENV_ADMIN_TOKEN, ADMIN)
        .env(
            "AETHER_CONTROL_DATABASE_URL",
            "postgres://u:hunter2@127.0.0.1:1/db",
        )
        .env("AETHER_S3_ENDPOINT", "http://127.0.0.1:1")
        .env("AETHER_S3_ACCESS_KEY", "a")
        .env("AETHER_S3_SECRET_KEY", "b")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connecting to Postgres at postgres://u:***@127.0.0.1:1/db"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        err.contains("waiting for the database"),
        "it retried first: {err}"
    );
    assert!(err.contains("waited 1s"), "{err}");
}

/// A database that comes up after the control plane (bootstrap starts both at once): the
/// control plane waits for it instead of exiting into the kubelet's crash backoff. Here the
/// database is a SQLite file whose directory appears only once the control plane said it waits.
#[test]
fn a_database_that_comes_up_later_is_waited_for() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let server = s3(&tmp.path().join("s3"));
    let later = tmp.path().join("later");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aether-control"))
        .args(["--auth", "local", "--listen", &format!("127.0.0.1:{port}")])
        .env(ENV_ADMIN_TOKEN, ADMIN)
        .env(
            "AETHER_CONTROL_DATABASE_URL",
            format!("sqlite:{}", later.join("control.db").display()),
        )
        .env("AETHER_S3_ENDPOINT", server.endpoint())
        .env("AETHER_S3_ACCESS_KEY", "owner")
        .env("AETHER_S3_SECRET_KEY", STORE_SECRET)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("waiting for the database"), "{first}");
    std::fs::create_dir(&later).unwrap();
    let c = Control { child, port };
    wait_for(
        "the control plane to answer once its database is there",
        PATIENCE,
        || c.admin().apps().is_ok(),
        || format!("port {port}"),
    );
}
