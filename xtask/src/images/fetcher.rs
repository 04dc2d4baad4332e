//! The fetcher image: the static `aether-fetcher` and the passwd/group entries of its non-root
//! user, nothing else (`FROM scratch`).

use std::path::{Path, PathBuf};

use aether_artifact::FetcherEnv;
use anyhow::Result;
use xshell::Shell;

use super::Spec;

pub const NAME: &str = "docker.io/aether/fetcher";

pub fn run(sh: &Shell, out: Option<&Path>) -> Result<super::ImageInfo> {
    super::static_image(sh, "aether-fetcher", spec, out.unwrap_or(&archive()))
}

/// Where the fetcher's archive is written and looked for.
pub fn archive() -> PathBuf {
    super::archive_at("AETHER_FETCHER_IMAGE_ARCHIVE", "aether-fetcher-image.tar")
}

pub fn spec(binary: &Path) -> Result<Spec> {
    super::scratch(
        NAME,
        "aether-fetcher",
        FetcherEnv::BIN_IN_IMAGE,
        binary,
        FetcherEnv::HTTP_PORT,
    )
}
