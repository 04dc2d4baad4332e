//! `cargo xtask package <dir> [-o FILE]`.

use std::io;
use std::path::PathBuf;

use anyhow::Result;

use super::Ctx;
use crate::package::{human_bytes, pack_to_file_with, pack_with_progress, show_progress};

/// Package a directory as a deterministic tar.gz and print its digest.
#[derive(clap::Args)]
pub struct Package {
    dir: PathBuf,
    /// Write the archive here (default: only compute the digest).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Print one JSON object (see the README's schema) instead of key=value lines.
    #[arg(long)]
    json: bool,
}

impl Package {
    pub fn run(self, _: &Ctx) -> Result<()> {
        let progress = show_progress();
        let packed = match &self.output {
            Some(out) => pack_to_file_with(&self.dir, out, progress)?,
            None => pack_with_progress(&self.dir, io::sink(), progress)?,
        };
        eprintln!(
            "packed {} entries, {} of content into {} compressed",
            packed.entries,
            human_bytes(packed.content_bytes),
            human_bytes(packed.bytes)
        );
        if self.json {
            println!(
                "{}",
                serde_json::json!({
                    "digest": packed.digest,
                    "bytes": packed.bytes,
                    "entries": packed.entries,
                    "content_bytes": packed.content_bytes,
                    "file": self.output,
                })
            );
            return Ok(());
        }
        if let Some(out) = &self.output {
            println!("file={}", out.display());
        }
        println!("digest={}", packed.digest);
        Ok(())
    }
}
