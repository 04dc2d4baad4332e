//! `cargo xtask package <dir> [-o FILE]`.

use std::io;
use std::path::PathBuf;

use anyhow::Result;

use super::Ctx;
use crate::ops::packing::{
    human_bytes, pack_layout_to_file, pack_layout_with_progress, pack_with_progress, show_progress,
};

/// Package an app directory as a deterministic tar.gz and print its digest: the same app layer
/// `hot-upload` makes (release record in, `node_modules` out as its own layer, whose digest is
/// computed here too).
#[derive(clap::Args)]
pub struct Package {
    dir: PathBuf,
    /// Write the archive here (default: only compute the digest).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Print one JSON object (schema: docs/reference.md) instead of key=value lines.
    #[arg(long)]
    json: bool,
}

impl Package {
    pub fn run(self, _: &Ctx) -> Result<()> {
        let progress = show_progress();
        aether_artifact::pack::check_root(&self.dir)?;
        let start = aether_artifact::app::detect(&self.dir).map_err(anyhow::Error::msg)?;
        for w in &start.warnings {
            eprintln!("warning: {w}");
        }
        let deps = self.deps(start.node_major)?;
        let (record, layout) = crate::ops::upload::app_layout(&start, deps.clone());
        eprintln!("starts as `{}` (from {})", start.command_line(), start.from);
        let packed = match &self.output {
            Some(out) => pack_layout_to_file(&self.dir, out, progress, &layout)?,
            None => pack_layout_with_progress(&self.dir, io::sink(), progress, &layout)?,
        };
        let big = self
            .output
            .as_deref()
            .and_then(|out| crate::ops::packing::big_layer_warning(out, packed.content_bytes));
        if let Some(w) = big {
            eprintln!("warning: {w}");
        }
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
                    "entry": start.entry,
                    "node_major": start.node_major,
                    "deps": deps,
                    "release": record,
                })
            );
            return Ok(());
        }
        if let Some(out) = &self.output {
            println!("file={}", out.display());
        }
        if let Some(d) = &deps {
            println!("deps={}", d.digest);
        }
        println!("digest={}", packed.digest);
        Ok(())
    }

    /// The dependency layer as an upload records it, computed offline: its digest from packing
    /// `node_modules`, its key from the lockfile.
    fn deps(&self, node_major: u32) -> Result<Option<aether_artifact::app::Deps>> {
        use aether_artifact::app;
        let Some(source) = crate::ops::deps::Source::of(&self.dir, node_major)? else {
            return Ok(None);
        };
        let scratch = tempfile::tempdir()?;
        let modules = source.tree(scratch.path())?;
        let packed = pack_with_progress(&modules, io::sink(), false)?;
        Ok(Some(app::Deps::new(
            packed.digest,
            source.lock.as_ref(),
            app::has_native_addons(&modules),
        )))
    }
}
