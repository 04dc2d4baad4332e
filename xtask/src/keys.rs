//! Where the signing and verify keys come from (`AETHER_SIGNING_KEY`, `AETHER_VERIFY_KEY`: a
//! path, or the key itself for CI secrets). Uploads sign with the one; targets hand the other to
//! every fetcher.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// The secret key that signs uploads: `AETHER_SIGNING_KEY`, a path to a minisign secret key
/// file or (for CI secrets) the key file's contents.
pub const ENV_SIGNING_KEY: &str = "AETHER_SIGNING_KEY";
/// The public key the fetchers require signatures from: `AETHER_VERIFY_KEY`, a path to the
/// `.pub` file, its contents, or the bare base64 key.
pub const ENV_VERIFY_KEY: &str = "AETHER_VERIFY_KEY";

/// Reads a key setting: a file path, or the key itself.
fn read_key_setting(var: &str) -> Result<Option<String>> {
    let Some(v) = std::env::var(var).ok().filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let p = PathBuf::from(v.trim());
    if !v.contains('\n') && p.is_file() {
        return Ok(Some(
            std::fs::read_to_string(&p)
                .with_context(|| format!("reading {} ({var})", p.display()))?,
        ));
    }
    Ok(Some(v))
}

/// The public key fetchers must check, as the bare base64 key, if one is configured.
pub fn verify_key() -> Result<Option<String>> {
    let Some(k) = read_key_setting(ENV_VERIFY_KEY)? else {
        return Ok(None);
    };
    let b64 = k
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or_default()
        .to_string();
    minisign::PublicKey::from_base64(&b64)
        .map_err(|e| anyhow::anyhow!("{ENV_VERIFY_KEY} is not a minisign public key: {e}"))?;
    Ok(Some(b64))
}

pub fn signing_key() -> Result<Option<minisign::SecretKey>> {
    let Some(k) = read_key_setting(ENV_SIGNING_KEY)? else {
        return Ok(None);
    };
    let sk = minisign::SecretKeyBox::from_string(&k)
        .and_then(|b| b.into_unencrypted_secret_key())
        .map_err(|e| {
            anyhow::anyhow!(
                "{ENV_SIGNING_KEY} is not an unencrypted minisign secret key ({e}): make one with `cargo xtask keygen`"
            )
        })?;
    Ok(Some(sk))
}
