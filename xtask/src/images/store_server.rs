//! The in-cluster store's image: the static `aether-store` (the s3s server the embedded store
//! runs) as its non-root user, and the mount point of its data, nothing else (`FROM scratch`).

use std::path::{Path, PathBuf};

use aether_store::StoreEnv;
use anyhow::Result;
use xshell::Shell;

use super::{Entry, Spec};

pub const NAME: &str = "docker.io/aether/store";

pub fn run(sh: &Shell, out: Option<&Path>) -> Result<super::ImageInfo> {
    super::static_image(sh, "aether-store", spec, out.unwrap_or(&archive()))
}

/// Where the store's archive is written and looked for.
pub fn archive() -> PathBuf {
    super::archive_at("AETHER_STORE_IMAGE_ARCHIVE", "aether-store-image.tar")
}

pub fn spec(binary: &Path) -> Result<Spec> {
    let mut s = super::scratch(
        NAME,
        "aether-store",
        StoreEnv::BIN_IN_IMAGE,
        binary,
        StoreEnv::PORT,
    )?;
    s.entries.insert(
        StoreEnv::DATA_IN_IMAGE.trim_start_matches('/').into(),
        Entry::Dir,
    );
    Ok(s)
}
