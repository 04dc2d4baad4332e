//! The store's settings: the `AETHER_S3_*` variables both the xtask and the fetcher read,
//! layered (environment over config file over defaults), validated with how to fix them, and
//! the secret key kept out of every `Debug` print.

use std::fmt;
use std::path::PathBuf;

pub const ENV_ENDPOINT: &str = "AETHER_S3_ENDPOINT";
pub const ENV_REGION: &str = "AETHER_S3_REGION";
pub const ENV_BUCKET: &str = "AETHER_S3_BUCKET";
pub const ENV_ACCESS_KEY: &str = "AETHER_S3_ACCESS_KEY";
pub const ENV_SECRET_KEY: &str = "AETHER_S3_SECRET_KEY";
/// PEM file of extra CAs to trust for an `https://` endpoint (a self-signed MinIO), on top of
/// the public web roots.
pub const ENV_CA_FILE: &str = "AETHER_S3_CA_FILE";

pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_BUCKET: &str = "aether-artifacts";

/// Artifacts above this size go up as multipart, so a progress bar can move and a failed part
/// costs one part, not the whole upload.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
pub const PART_SIZE: usize = 8 << 20;

/// A secret that never prints.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Complete store settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreConfig {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Store settings from one source; sources are layered with [`PartialStore::or`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialStore {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A read-only key pair for pods, made by the operator of a store that cannot derive
    /// per-app keys ([`super::read_credentials`]); never used to upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_secret_key: Option<Secret>,
}

impl PartialStore {
    pub fn from_env() -> PartialStore {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> PartialStore {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        PartialStore {
            endpoint: get(ENV_ENDPOINT),
            region: get(ENV_REGION),
            bucket: get(ENV_BUCKET),
            access_key: get(ENV_ACCESS_KEY),
            secret_key: get(ENV_SECRET_KEY).map(Secret),
            ca_file: get(ENV_CA_FILE).map(PathBuf::from),
            read_access_key: get(super::ENV_READ_ACCESS_KEY),
            read_secret_key: get(super::ENV_READ_SECRET_KEY).map(Secret),
        }
    }

    /// Fields of `self` win; missing ones come from `lower`.
    pub fn or(self, lower: PartialStore) -> PartialStore {
        PartialStore {
            endpoint: self.endpoint.or(lower.endpoint),
            region: self.region.or(lower.region),
            bucket: self.bucket.or(lower.bucket),
            access_key: self.access_key.or(lower.access_key),
            secret_key: self.secret_key.or(lower.secret_key),
            ca_file: self.ca_file.or(lower.ca_file),
            read_access_key: self.read_access_key.or(lower.read_access_key),
            read_secret_key: self.read_secret_key.or(lower.read_secret_key),
        }
    }

    pub fn finish(self) -> Result<StoreConfig, String> {
        let missing = |what: &str, env: &str| {
            format!("no store {what} configured: set {env}, pass it as a flag, or run `cargo xtask bootstrap` (which writes .aether/config.json)")
        };
        let cfg = StoreConfig {
            endpoint: self
                .endpoint
                .ok_or_else(|| missing("endpoint", ENV_ENDPOINT))?,
            region: self.region.unwrap_or_else(|| DEFAULT_REGION.into()),
            bucket: self.bucket.unwrap_or_else(|| DEFAULT_BUCKET.into()),
            access_key: self
                .access_key
                .ok_or_else(|| missing("access key", ENV_ACCESS_KEY))?,
            secret_key: self
                .secret_key
                .ok_or_else(|| missing("secret key", ENV_SECRET_KEY))?,
            ca_file: self.ca_file,
        };
        if !(cfg.endpoint.starts_with("http://") || cfg.endpoint.starts_with("https://")) {
            return Err(format!(
                "store endpoint {:?} must start with http:// or https://",
                cfg.endpoint
            ));
        }
        validate_bucket_name(&cfg.bucket)?;
        Ok(cfg)
    }
}

/// S3 bucket naming rules, checked before any request so the error is immediate and precise.
pub fn validate_bucket_name(b: &str) -> Result<(), String> {
    let ok_chars = b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    let ends_ok = b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if (3..=63).contains(&b.len()) && ok_chars && ends_ok && !b.contains("..") {
        Ok(())
    } else {
        Err(format!("invalid bucket name {b:?}: use 3-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit (set {ENV_BUCKET})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_and_defaults() {
        let env = PartialStore::from_lookup(|k| match k {
            ENV_ENDPOINT => Some("http://env:9000".into()),
            ENV_SECRET_KEY => Some("env-secret".into()),
            ENV_BUCKET => Some("".into()),
            _ => None,
        });
        let flags = PartialStore {
            endpoint: Some("http://flag:1".into()),
            ..Default::default()
        };
        let file = PartialStore {
            endpoint: Some("http://file:2".into()),
            access_key: Some("file-ak".into()),
            secret_key: Some(Secret::new("file-secret")),
            ..Default::default()
        };
        let cfg = flags.or(env).or(file).finish().unwrap();
        assert_eq!(cfg.endpoint, "http://flag:1");
        assert_eq!(cfg.access_key, "file-ak");
        assert_eq!(cfg.secret_key.expose(), "env-secret");
        assert_eq!(
            cfg.bucket, DEFAULT_BUCKET,
            "an empty variable counts as unset"
        );
        assert_eq!(cfg.region, DEFAULT_REGION);
        assert!(!format!("{cfg:?}").contains("env-secret"));
    }

    #[test]
    fn missing_and_invalid_settings_say_how_to_fix() {
        let e = PartialStore::default().finish().unwrap_err();
        assert!(e.contains(ENV_ENDPOINT) && e.contains("bootstrap"), "{e}");
        let base = PartialStore {
            endpoint: Some("http://x".into()),
            access_key: Some("a".into()),
            secret_key: Some(Secret::new("s")),
            ..Default::default()
        };
        for bad in ["Bad", "ab", "-ab", "a..b", &"a".repeat(64)] {
            let e = PartialStore {
                bucket: Some(bad.into()),
                ..base.clone()
            }
            .finish()
            .unwrap_err();
            assert!(e.contains("invalid bucket name"), "{e}");
        }
        let e = PartialStore {
            endpoint: Some("localhost:9000".into()),
            ..base
        }
        .finish()
        .unwrap_err();
        assert!(e.contains("http://"), "{e}");
    }
}
