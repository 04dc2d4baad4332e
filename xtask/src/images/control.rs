//! The control plane's image: the static `aether-control` (SQLite compiled in, Postgres spoken
//! in Rust) as its non-root user, nothing else (`FROM scratch`).

use std::path::{Path, PathBuf};

use aether_artifact::control::PORT;
use anyhow::Result;
use xshell::Shell;

use super::Spec;

pub const NAME: &str = "docker.io/aether/control";
pub const BIN_IN_IMAGE: &str = "/aether-control";

pub fn run(sh: &Shell, out: Option<&Path>) -> Result<super::ImageInfo> {
    super::static_image(sh, "aether-control", spec, out.unwrap_or(&archive()))
}

/// Where the control plane's archive is written and looked for.
pub fn archive() -> PathBuf {
    super::archive_at("AETHER_CONTROL_IMAGE_ARCHIVE", "aether-control-image.tar")
}

pub fn spec(binary: &Path) -> Result<Spec> {
    super::scratch(NAME, "aether-control", BIN_IN_IMAGE, binary, PORT)
}
