//! Packing on the host: into a file through a temporary name, and sizes for people.

use std::fs;
use std::io;
use std::path::Path;

use aether_artifact::pack::{self, Packed};
use anyhow::{Context, Result};

/// Packs into `out` through a temporary file beside it, so a failed pack never leaves a
/// truncated archive under the final name.
pub fn pack_to_file(dir: &Path, out: &Path) -> Result<Packed> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(parent).context("creating a temporary file")?;
    let packed = pack::pack_dir(dir, io::BufWriter::new(tmp.as_file())).context("packaging")?;
    tmp.persist(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(packed)
}

pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
