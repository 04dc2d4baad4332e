//! The in-cluster store's image: the static `aether-store` (the s3s server the embedded store
//! runs) as its non-root user, nothing else (`FROM scratch`).

use std::path::{Path, PathBuf};

use aether_store::StoreEnv;
use anyhow::{Context, Result};
use xshell::Shell;

use super::{Entry, Spec, NONROOT, VERSION};

pub const NAME: &str = "docker.io/aether/store";

pub fn run(sh: &Shell, out: Option<&Path>) -> Result<super::ImageInfo> {
    let bin = super::build_static(sh, "aether-store")?;
    let info = super::write_archive(&spec(&bin)?, out.unwrap_or(&archive()))?;
    super::report(&info);
    Ok(info)
}

/// Where the store's archive is written and looked for.
pub fn archive() -> PathBuf {
    if let Some(p) = std::env::var_os("AETHER_STORE_IMAGE_ARCHIVE") {
        return p.into();
    }
    crate::target_dir().join("aether-store-image.tar")
}

pub fn spec(binary: &Path) -> Result<Spec> {
    let mut s = Spec {
        name: NAME.into(),
        version: VERSION.into(),
        title: "aether-store".into(),
        entrypoint: vec![StoreEnv::BIN_IN_IMAGE.into()],
        ports: vec![StoreEnv::PORT],
        ..Default::default()
    };
    let bin = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    s.file(StoreEnv::BIN_IN_IMAGE, 0o755, bin);
    s.entries.insert(
        StoreEnv::DATA_IN_IMAGE.trim_start_matches('/').into(),
        Entry::Dir,
    );
    s.user_entry("nonroot", NONROOT, "/");
    Ok(s)
}
