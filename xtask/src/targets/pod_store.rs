//! Which store credentials an app's pods get: never the uploader's by accident. A pod only
//! GETs its own app's artifacts, so it gets a key that can do that and nothing more; the
//! uploader's key, which can overwrite every app's artifacts, stays on the developer's machine.

use aether_artifact::store::{
    read_credentials, read_prefix, ErrorKind, PartialStore, Secret, Store, StoreConfig,
    ENV_READ_ACCESS_KEY, ENV_READ_SECRET_KEY,
};
use aether_artifact::AppName;
use anyhow::{bail, Result};

/// The flag that gives pods the uploader's credentials on purpose (mirrored by
/// `AETHER_ALLOW_WRITER_CREDENTIALS`).
pub const ALLOW_WRITER_FLAG: &str = "--allow-writer-credentials";

/// What may happen when the store has no read-only key for pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    Refuse,
    /// [`ALLOW_WRITER_FLAG`] was given: use the uploader's, with a warning.
    AllowedByFlag,
    /// The "pod" is processes of the uploader's own user on the uploader's machine (the local
    /// target), which can read the uploader's key anyway: nothing to defend.
    SameUser,
}

/// The key pair an app's pods read the store with, and how it was chosen (for the output).
#[derive(Debug, Clone)]
pub struct PodCredentials {
    pub access_key: String,
    pub secret_key: Secret,
    pub kind: CredentialKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// Derived for this app by a store that understands `aether-read-<app>` keys.
    PerApp,
    /// The read-only pair the store's operator made (`AETHER_S3_READ_*`).
    ReadOnly,
    /// The uploader's own: only with [`ALLOW_WRITER_FLAG`].
    Writer,
}

impl CredentialKind {
    pub fn describe(self) -> &'static str {
        match self {
            CredentialKind::PerApp => "a read-only key for this app alone",
            CredentialKind::ReadOnly => "the store's read-only key (AETHER_S3_READ_ACCESS_KEY)",
            CredentialKind::Writer => "the uploader's key, which can write (allowed by flag)",
        }
    }
}

/// Chooses the pods' credentials: the project's own store derives a per-app key (asked once,
/// with a HEAD the key may make); otherwise the operator's read-only pair; otherwise the
/// uploader's only as `writer` allows, else an error saying how to make a read-only key.
pub fn pod_credentials(
    app: &AppName,
    store: &StoreConfig,
    layers: &PartialStore,
    writer: Writer,
) -> Result<PodCredentials> {
    let (ak, sk) = read_credentials(app, &store.secret_key);
    let probe = Store::new(StoreConfig {
        access_key: ak.clone(),
        secret_key: sk.clone(),
        ..store.clone()
    })?;
    match probe.exists(&format!("{}.aether-probe", read_prefix(app))) {
        Ok(_) => {
            return Ok(PodCredentials {
                access_key: ak,
                secret_key: sk,
                kind: CredentialKind::PerApp,
            })
        }
        Err(e) if matches!(e.kind, ErrorKind::BadCredentials | ErrorKind::Forbidden) => {}
        Err(e) => return Err(e.into()),
    }
    if let (Some(ak), Some(sk)) = (&layers.read_access_key, &layers.read_secret_key) {
        return Ok(PodCredentials {
            access_key: ak.clone(),
            secret_key: sk.clone(),
            kind: CredentialKind::ReadOnly,
        });
    }
    if writer != Writer::Refuse {
        if writer == Writer::AllowedByFlag {
            eprintln!(
            "warning: {app}'s pods get the uploader's store credentials ({ALLOW_WRITER_FLAG}): \
             anyone who reads their Secret can overwrite every app's artifacts"
            );
        }
        return Ok(PodCredentials {
            access_key: store.access_key.clone(),
            secret_key: store.secret_key.clone(),
            kind: CredentialKind::Writer,
        });
    }
    bail!(
        "the store at {} has no read-only key for pods, and pods must not get the uploader's \
         (it can overwrite every app's artifacts): create a key that may only GET \
         {}/artifacts/* (docs/operations.md, \"Store credentials for pods\") and set \
         {ENV_READ_ACCESS_KEY}/{ENV_READ_SECRET_KEY}, or pass {ALLOW_WRITER_FLAG} to accept the risk",
        store.endpoint,
        store.bucket
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_s3local::Server;

    fn cfg(server: &Server) -> StoreConfig {
        StoreConfig {
            endpoint: server.endpoint(),
            region: "us-east-1".into(),
            bucket: "aether-artifacts".into(),
            access_key: "owner".into(),
            secret_key: Secret::new("owner-secret"),
            ca_file: None,
        }
    }

    #[test]
    fn each_store_gets_the_narrowest_key_it_has() {
        let t = tempfile::tempdir().unwrap();
        let demo = AppName::parse("demo").unwrap();
        let derives = Server::start_with(
            &t.path().join("a"),
            &["127.0.0.1:0".parse().unwrap()],
            "owner",
            "owner-secret",
            Some(aether_store::read_keys("owner-secret")),
        )
        .unwrap();
        let c = pod_credentials(
            &demo,
            &cfg(&derives),
            &PartialStore::default(),
            Writer::Refuse,
        )
        .unwrap();
        assert_eq!(
            (c.kind, c.access_key.as_str()),
            (CredentialKind::PerApp, "aether-read-demo")
        );

        // A store that knows no derived keys (MinIO, any S3).
        let plain = Server::start_ephemeral(&t.path().join("b"), "owner", "owner-secret").unwrap();
        let e = pod_credentials(
            &demo,
            &cfg(&plain),
            &PartialStore::default(),
            Writer::Refuse,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(ALLOW_WRITER_FLAG) && e.contains(ENV_READ_ACCESS_KEY),
            "{e}"
        );
        let given = PartialStore {
            read_access_key: Some("reader".into()),
            read_secret_key: Some(Secret::new("reader-secret")),
            ..Default::default()
        };
        let c = pod_credentials(&demo, &cfg(&plain), &given, Writer::Refuse).unwrap();
        assert_eq!(
            (c.kind, c.access_key.as_str()),
            (CredentialKind::ReadOnly, "reader")
        );
        for w in [Writer::AllowedByFlag, Writer::SameUser] {
            let c = pod_credentials(&demo, &cfg(&plain), &PartialStore::default(), w).unwrap();
            assert_eq!(
                (c.kind, c.access_key.as_str()),
                (CredentialKind::Writer, "owner")
            );
        }
        // The store being down is its own error, not a reason to hand out another key.
        drop(plain);
        let down = cfg(&derives);
        drop(derives);
        let e = pod_credentials(&demo, &down, &given, Writer::AllowedByFlag).unwrap_err();
        assert!(format!("{e:#}").contains("is the store running"), "{e:#}");
    }
}
