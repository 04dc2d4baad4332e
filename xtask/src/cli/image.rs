//! `cargo xtask image <fetcher|store|control|postgres>` (and `sidecar-image`, the fetcher's).

use std::path::PathBuf;

use anyhow::Result;

use super::Ctx;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// The fetcher sidecar (static, FROM scratch).
    Fetcher,
    /// The in-cluster object store (static, FROM scratch).
    Store,
    /// The control plane (static, FROM scratch).
    Control,
    /// Postgres from this machine's Debian package, for clusters that cannot pull postgres:*.
    Postgres,
}

/// Write an OCI image archive of the project's own images (no Docker needed).
#[derive(clap::Args)]
pub struct Image {
    #[arg(value_enum)]
    which: Which,
    /// Archive path [default: target/aether-<which>-image.tar]
    #[arg(short, long)]
    output: Option<PathBuf>,
}

impl Image {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let out = self.output.as_deref();
        match self.which {
            Which::Fetcher => crate::images::fetcher::run(ctx.sh, out)?,
            Which::Store => crate::images::store_server::run(ctx.sh, out)?,
            Which::Control => crate::images::control::run(ctx.sh, out)?,
            Which::Postgres => crate::images::postgres::run(ctx.sh, out)?,
        };
        Ok(())
    }
}

/// Build the fetcher as a static binary and write its OCI image archive (`image fetcher`).
#[derive(clap::Args)]
pub struct SidecarImage {
    /// Archive path [default: target/aether-fetcher-image.tar]
    #[arg(short, long)]
    output: Option<PathBuf>,
}

impl SidecarImage {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        crate::images::fetcher::run(ctx.sh, self.output.as_deref()).map(drop)
    }
}
