//! The store client against a real S3 server (s3s + s3s-fs, SigV4 checked) on loopback.

use std::time::Duration;

use aether_artifact::store::{ErrorKind, PartialStore, Secret, Store, StoreConfig};
use aether_s3local::Server;

const AK: &str = "test-access";
const SK: &str = "test-secret-do-not-print";

fn config(endpoint: &str, secret: &str) -> StoreConfig {
    PartialStore {
        endpoint: Some(endpoint.into()),
        bucket: Some("artifacts-test".into()),
        access_key: Some(AK.into()),
        secret_key: Some(Secret::new(secret)),
        ..Default::default()
    }
    .finish()
    .unwrap()
}

fn no_secret(s: &str) {
    assert!(!s.contains(SK), "secret leaked: {s}");
}

#[test]
fn bucket_creation_upload_exists_download_presign() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_ephemeral(dir.path(), AK, SK).unwrap();
    let store = Store::new(config(&server.endpoint(), SK)).unwrap();
    no_secret(&format!("{store:?}"));
    assert!(
        store.ensure_bucket().unwrap(),
        "first call creates the bucket"
    );
    assert!(!store.ensure_bucket().unwrap(), "second call finds it");

    let key = "artifacts/demo/x/app.tar.gz";
    assert!(!store.exists(key).unwrap());
    let f = dir.path().join("small.bin");
    std::fs::write(&f, b"hello artifact").unwrap();
    let mut seen = 0;
    store.put_file(key, &f, &mut |n| seen += n).unwrap();
    assert_eq!(seen, 14);
    assert!(store.exists(key).unwrap());
    let mut out = Vec::new();
    assert_eq!(store.get_to_writer(key, &mut out).unwrap(), 14);
    assert_eq!(out, b"hello artifact");

    // A plain HTTP client, no signing of its own, can fetch the presigned URL.
    let url = store.presign_get(key, Duration::from_secs(600)).unwrap();
    no_secret(&url);
    let resp = attohttpc::get(&url).send().unwrap();
    assert!(resp.is_success(), "{}", resp.status());
    assert_eq!(resp.bytes().unwrap(), b"hello artifact");
    // Tampering with the signed URL is refused: the signature is really checked.
    let resp = attohttpc::get(url.replace("demo", "demx")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 403);

    let e = store
        .get_to_writer("artifacts/demo/missing/app.tar.gz", &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[test]
fn multipart_for_large_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_ephemeral(dir.path(), AK, SK).unwrap();
    let store = Store::new(config(&server.endpoint(), SK)).unwrap();
    store.ensure_bucket().unwrap();
    let f = dir.path().join("big.bin");
    let data: Vec<u8> = (0..(20u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&f, &data).unwrap();
    let puts_before = server.requests("PUT");
    let mut calls = 0;
    store
        .put_file("artifacts/demo/big/app.tar.gz", &f, &mut |_| calls += 1)
        .unwrap();
    assert_eq!(calls, 3, "20 MiB in 8 MiB parts");
    assert_eq!(server.requests("PUT") - puts_before, 3, "one PUT per part");
    let mut out = Vec::new();
    store
        .get_to_writer("artifacts/demo/big/app.tar.gz", &mut out)
        .unwrap();
    assert!(out == data);
}

#[test]
fn wrong_secret_is_a_clear_credentials_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_ephemeral(dir.path(), AK, SK).unwrap();
    let store = Store::new(config(&server.endpoint(), "wrong-secret")).unwrap();
    let e = store.ensure_bucket().unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadCredentials, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&server.endpoint()) && msg.contains("AETHER_S3_SECRET_KEY"),
        "{msg}"
    );
    no_secret(&msg);
    assert!(!msg.contains("wrong-secret"), "{msg}");
    let e = store.exists("artifacts/x").unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadCredentials, "{e}");
}

#[test]
fn server_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_ephemeral(dir.path(), AK, SK).unwrap();
    let endpoint = server.endpoint();
    let store = Store::new(config(&endpoint, SK)).unwrap();
    // s3s-fs, unlike S3, accepts a PUT into a missing bucket and answers NoSuchKey to a GET
    // from one; a missing bucket shows only in a listing, which is what `ensure_bucket`
    // relies on (its `true` above is that path).
    assert!(store.ensure_bucket().unwrap());
    drop(server);
    let e = store.ensure_bucket().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(
        e.to_string().contains(&endpoint) && e.to_string().contains("running"),
        "{e}"
    );
}

/// An `https://` endpoint through a real TLS terminator in front of the real S3 server: trusted
/// through `AETHER_S3_CA_FILE`, refused without it with an error naming the variable, and a
/// bad CA file named before any request.
#[test]
fn tls_with_a_private_ca() {
    use aether_s3local::tls::{Terminator, TestCa};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_ephemeral(dir.path(), AK, SK).unwrap();
    let ca = TestCa::new().unwrap();
    let tls = Terminator::start(&ca, server.addr()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();

    let untrusted = Store::new(config(&tls.endpoint(), SK)).unwrap();
    let e = untrusted.ensure_bucket().unwrap_err();
    eprintln!("without the CA: {e}");
    assert_eq!(e.kind, ErrorKind::Tls, "{e}");
    assert!(e.to_string().contains("AETHER_S3_CA_FILE"), "{e}");

    let lookup = |k: &str| match k {
        "AETHER_S3_ENDPOINT" => Some(tls.endpoint()),
        "AETHER_S3_BUCKET" => Some("artifacts-tls".into()),
        "AETHER_S3_ACCESS_KEY" => Some(AK.into()),
        "AETHER_S3_SECRET_KEY" => Some(SK.into()),
        "AETHER_S3_CA_FILE" => Some(ca_file.display().to_string()),
        _ => None,
    };
    let store = Store::new(PartialStore::from_lookup(lookup).finish().unwrap()).unwrap();
    assert!(store.ensure_bucket().unwrap());
    let data = vec![7u8; 20 << 20];
    let big = dir.path().join("big");
    std::fs::write(&big, &data).unwrap();
    store
        .put_file("artifacts/a/big", &big, &mut |_| {})
        .unwrap();
    assert_eq!(
        store.size("artifacts/a/big").unwrap(),
        Some(data.len() as u64)
    );
    let mut out = Vec::new();
    store.get_to_writer("artifacts/a/big", &mut out).unwrap();
    assert!(out == data);
    assert!(
        server.requests("PUT") >= 3,
        "multipart went through the terminator"
    );

    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let mut cfg = config(&tls.endpoint(), SK);
    cfg.ca_file = Some(bogus.clone());
    let e = Store::new(cfg).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Tls, "{e}");
    assert!(e.to_string().contains(&bogus.display().to_string()), "{e}");
}
