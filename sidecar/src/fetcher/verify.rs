//! Signatures: a release goes live only when its provenance record is signed by the configured
//! key and names this app and digest.

use aether_artifact::store::{ErrorKind, Store, Timeouts};
use aether_artifact::{AppName, Digest};
use anyhow::Result;

/// Checks, before any byte of the artifact is fetched, that its provenance record is signed by
/// `public_key` and names this app and digest (the digest then binds the artifact's bytes).
pub(super) fn verify_signature(
    store: &Store,
    public_key: &str,
    app: &AppName,
    digest: &Digest,
    t: &Timeouts,
) -> Result<()> {
    use aether_artifact::provenance::{self, SignatureError};
    let get = |key: &str| -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        match store.get_with_timeouts(key, &mut buf, t) {
            Ok(_) => Ok(Some(buf)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let sig_key = provenance::signature_key(app, digest);
    let unsigned = || SignatureError::Unsigned {
        key: sig_key.clone(),
    };
    let sig = get(&sig_key)?.ok_or_else(unsigned)?;
    let record = get(&provenance::key(app, digest))?.ok_or_else(unsigned)?;
    provenance::verify(
        public_key,
        app,
        digest,
        &record,
        &String::from_utf8_lossy(&sig),
    )?;
    Ok(())
}
