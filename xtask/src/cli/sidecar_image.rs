//! `cargo xtask sidecar-image`.

use std::path::PathBuf;

use anyhow::Result;

use super::Ctx;

/// Build the fetcher as a static binary and write its OCI image archive (no Docker needed).
#[derive(clap::Args)]
pub struct SidecarImage {
    /// Archive path [default: target/aether-fetcher-image.tar]
    #[arg(short, long)]
    output: Option<PathBuf>,
}

impl SidecarImage {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        crate::fetcher_image::run(ctx.sh, self.output.as_deref())
    }
}
