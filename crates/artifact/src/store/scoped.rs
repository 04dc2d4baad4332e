//! Credentials a pod gets: read-only, for one app. The uploader's key pair can write every
//! app's artifacts; a pod needs to GET its own app's objects and nothing else, so one
//! compromised fetcher (or one read of its Secret) cannot change what any pod runs.
//!
//! With the project's own store (embedded or in-cluster) the read key of an app is derived
//! from the store's secret: access key `aether-read-<app>`, secret
//! HMAC-SHA256(store secret, `aether-read/v1/<app>`). The server derives the same secret to
//! check a signature, so no key list has to be kept or synchronised, and the CLI can hand a
//! pod its key without a round trip. Any other store gets a read-only key pair its operator
//! made (`AETHER_S3_READ_ACCESS_KEY`/`AETHER_S3_READ_SECRET_KEY`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Secret;
use crate::{AppName, KEY_PREFIX};

pub const READ_KEY_PREFIX: &str = "aether-read-";
pub const ENV_READ_ACCESS_KEY: &str = "AETHER_S3_READ_ACCESS_KEY";
pub const ENV_READ_SECRET_KEY: &str = "AETHER_S3_READ_SECRET_KEY";

/// The read-only key pair of `app`'s pods on a store whose secret is `store_secret`.
pub fn read_credentials(app: &AppName, store_secret: &Secret) -> (String, Secret) {
    let mut mac = Hmac::<Sha256>::new_from_slice(store_secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("aether-read/v1/{app}").as_bytes());
    let secret: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (format!("{READ_KEY_PREFIX}{app}"), Secret::new(secret))
}

/// The app a derived read key belongs to, if `access_key` is one.
pub fn read_key_app(access_key: &str) -> Option<AppName> {
    AppName::parse(access_key.strip_prefix(READ_KEY_PREFIX)?).ok()
}

/// What `app`'s read key may GET: the app's artifacts and their provenance and signatures.
pub fn read_prefix(app: &AppName) -> String {
    format!("{KEY_PREFIX}{app}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_app_and_per_store() {
        let demo = AppName::parse("demo").unwrap();
        let other = AppName::parse("other").unwrap();
        let s = Secret::new("store-secret");
        let (ak, sk) = read_credentials(&demo, &s);
        assert_eq!(ak, "aether-read-demo");
        assert_eq!(sk.expose().len(), 64);
        assert_eq!(read_credentials(&demo, &s).1, sk, "derivation is stable");
        assert_ne!(read_credentials(&other, &s).1, sk);
        assert_ne!(read_credentials(&demo, &Secret::new("another")).1, sk);
        assert_eq!(read_key_app(&ak), Some(demo.clone()));
        assert_eq!(read_key_app("aether-read-Bad_Name"), None);
        assert_eq!(read_key_app("aether-demo"), None);
        assert_eq!(read_prefix(&demo), "artifacts/demo/");
    }
}
