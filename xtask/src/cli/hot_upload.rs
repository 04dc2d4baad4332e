//! `cargo xtask hot-upload <app> <dir>`: package, then upload to the content-addressed key,
//! skipping the upload when the object is already there.

use std::path::PathBuf;

use aether_artifact::AppName;
use anyhow::Result;

use super::Ctx;
use crate::ops::packing::human_bytes;
use crate::ops::upload::upload;

/// Package a directory and upload it, content-addressed, to the target's store.
#[derive(clap::Args)]
pub struct HotUpload {
    app: AppName,
    dir: PathBuf,
    /// Print one JSON object instead of key=value lines.
    #[arg(long)]
    json: bool,
    /// Validity of the presigned URL, in seconds (at most 7 days).
    #[arg(long, default_value_t = 3600)]
    url_expiry: u64,
}

impl HotUpload {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        crate::ops::upload::check_app(&self.dir)?;
        // The target's store: the configured one, else the embedded store it brings.
        let target = ctx.target();
        let store = target.store()?;
        let control = target.control()?;
        let up = upload(
            &store,
            control.as_ref(),
            &ctx.global,
            &self.app,
            &self.dir,
            self.url_expiry,
            !self.json,
        )?;
        if self.json {
            println!("{}", serde_json::to_string(&up)?);
            return Ok(());
        }
        if let Some(line) = up.deps_line() {
            eprintln!("{line}");
        }
        if up.uploaded {
            eprintln!(
                "uploaded {} in {} ms (packed in {} ms)",
                human_bytes(up.bytes),
                up.upload_ms,
                up.pack_ms
            );
        } else {
            eprintln!(
                "already in the store: skipped the upload (packed in {} ms)",
                up.pack_ms
            );
        }
        eprintln!("presigned URL valid for {} s", up.url_expires_in_secs);
        match &up.provenance.signature {
            Some(s) => eprintln!("provenance {} signed ({s})", up.provenance.provenance),
            None => eprintln!(
                "provenance {} (unsigned: set AETHER_SIGNING_KEY to sign)",
                up.provenance.provenance
            ),
        }
        if let Some(seq) = up.registered {
            eprintln!(
                "registered with the control plane as release #{seq} of {}",
                self.app
            );
        }
        println!("s3={}", up.s3);
        println!("url={}", up.url);
        if let Some(d) = &up.deps {
            println!("deps={}", d.deps.digest);
        }
        println!("digest={}", up.digest);
        Ok(())
    }
}
