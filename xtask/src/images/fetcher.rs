//! The fetcher image: the static `aether-fetcher` and the passwd/group entries of its non-root
//! user, nothing else (`FROM scratch`).

use std::path::{Path, PathBuf};

use aether_artifact::FetcherEnv;
use anyhow::{Context, Result};
use xshell::Shell;

use super::{Spec, NONROOT, VERSION};

pub const NAME: &str = "docker.io/aether/fetcher";

pub fn run(sh: &Shell, out: Option<&Path>) -> Result<super::ImageInfo> {
    let bin = super::build_static(sh, "aether-fetcher")?;
    let info = super::write_archive(&spec(&bin)?, out.unwrap_or(&archive()))?;
    super::report(&info);
    Ok(info)
}

/// Where the fetcher's archive is written and looked for.
pub fn archive() -> PathBuf {
    if let Some(p) = std::env::var_os("AETHER_FETCHER_IMAGE_ARCHIVE") {
        return p.into();
    }
    crate::target_dir().join("aether-fetcher-image.tar")
}

pub fn spec(binary: &Path) -> Result<Spec> {
    let mut s = Spec {
        name: NAME.into(),
        version: VERSION.into(),
        title: "aether-fetcher".into(),
        entrypoint: vec![FetcherEnv::BIN_IN_IMAGE.into()],
        ports: vec![FetcherEnv::HTTP_PORT],
        ..Default::default()
    };
    let bin = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    s.file(FetcherEnv::BIN_IN_IMAGE, 0o755, bin);
    s.user_entry("nonroot", NONROOT, "/");
    Ok(s)
}
