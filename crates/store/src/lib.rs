//! The store's side of the per-app read-only keys: the embedded store (`cargo xtask
//! local-store`) and the in-cluster `aether-store` both accept exactly these.

use aether_artifact::store::{read_credentials, read_key_app, read_prefix, Secret};

/// Every derived read-only key of `store_secret` ([`aether_artifact::store::read_credentials`]):
/// `aether-read-<app>` may GET/HEAD objects under `artifacts/<app>/` and nothing else.
pub fn read_keys(store_secret: &str) -> aether_s3local::ReadKeys {
    let secret = Secret::new(store_secret);
    std::sync::Arc::new(move |ak: &str| {
        let app = read_key_app(ak)?;
        Some(aether_s3local::ReadOnly {
            secret_key: read_credentials(&app, &secret).1.expose().into(),
            prefix: read_prefix(&app),
        })
    })
}

/// The environment the server reads (its flags' mirrors, and the keys, which never go in argv).
pub struct StoreEnv;

impl StoreEnv {
    pub const DIR: &'static str = "AETHER_STORE_DIR";
    pub const LISTEN: &'static str = "AETHER_STORE_LISTEN";
    pub const ACCESS_KEY: &'static str = "AETHER_STORE_ACCESS_KEY";
    pub const SECRET_KEY: &'static str = "AETHER_STORE_SECRET_KEY";
    pub const PORT: u16 = 9000;
    /// Where the image keeps its data (the volume's mount point).
    pub const DATA_IN_IMAGE: &'static str = "/data";
    pub const BIN_IN_IMAGE: &'static str = "/aether-store";
}
