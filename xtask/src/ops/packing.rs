//! Packing on the host: into a file through a temporary name, and sizes for people.

use std::fs;
use std::io;
use std::path::Path;

use aether_artifact::pack::{self, Layout, Packed};
use anyhow::{Context, Result};

/// Whether to draw progress: on a terminal only, never when stderr is piped or under CI (a
/// CI log would fill with redraws). CI means what it means to the test suites
/// (`aether_testkit::in_ci`): `CI` set to anything but empty, `0` or `false`.
pub fn show_progress() -> bool {
    use std::io::IsTerminal;
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
    std::io::stderr().is_terminal() && !ci
}

/// Packs `dir` into `out`; with `progress`, draws bytes and files read, rate and ETA on stderr.
pub fn pack_with_progress<W: io::Write + Send>(
    dir: &Path,
    out: W,
    progress: bool,
) -> Result<Packed> {
    pack_layout_with_progress(dir, out, progress, &Layout::default())
}

/// As [`pack_with_progress`], with `layout`'s exclusions and extra files.
pub fn pack_layout_with_progress<W: io::Write + Send>(
    dir: &Path,
    out: W,
    progress: bool,
    layout: &Layout,
) -> Result<Packed> {
    let bar = if progress {
        let (files, bytes) = pack::measure_layout(dir, layout)?;
        eprintln!("packing {files} files, {} of content", human_bytes(bytes));
        let bar = indicatif::ProgressBar::new(bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "packing {bar:20} {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        Some((bar, files))
    } else {
        None
    };
    let tick = |files: u64, bytes: u64| {
        if let Some((b, total)) = &bar {
            b.set_position(bytes);
            b.set_message(format!("{files}/{total} files"));
        }
    };
    let packed = pack::pack_layout(dir, out, pack::default_threads(), &tick, layout)?;
    if let Some((b, _)) = bar {
        b.finish_and_clear();
    }
    Ok(packed)
}

/// Packs into `out` through a temporary file beside it, so a failed pack never leaves a
/// truncated archive under the final name.
pub fn pack_to_file(dir: &Path, out: &Path) -> Result<Packed> {
    pack_to_file_with(dir, out, false)
}

/// As [`pack_to_file`], drawing progress when `progress`.
pub fn pack_to_file_with(dir: &Path, out: &Path, progress: bool) -> Result<Packed> {
    pack_layout_to_file(dir, out, progress, &Layout::default())
}

/// As [`pack_to_file_with`], with `layout`'s exclusions and extra files.
pub fn pack_layout_to_file(
    dir: &Path,
    out: &Path,
    progress: bool,
    layout: &Layout,
) -> Result<Packed> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(parent).context("creating a temporary file")?;
    let packed =
        pack_layout_with_progress(dir, io::BufWriter::new(tmp.as_file()), progress, layout)?;
    tmp.persist(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(packed)
}

pub use aether_artifact::human_bytes;

/// An app layer over this much content is most likely carrying something it should not.
pub const BIG_LAYER: u64 = 50 << 20;

/// The three top-level directories of a packed archive with the most content, biggest first:
/// what to put into `.aetherignore` when a layer is big.
pub fn biggest_dirs(archive: &Path) -> Result<Vec<(String, u64)>> {
    let f = fs::File::open(archive).with_context(|| format!("reading {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(f)));
    let mut sizes = std::collections::BTreeMap::<String, u64>::new();
    for e in tar.entries().context("reading the packed archive")? {
        let e = e.context("reading the packed archive")?;
        let path = e.path().context("reading the packed archive")?.into_owned();
        let mut parts = path.components();
        let (Some(top), Some(_)) = (parts.next(), parts.next()) else {
            continue;
        };
        *sizes
            .entry(top.as_os_str().to_string_lossy().into_owned())
            .or_default() += e.size();
    }
    let mut v: Vec<(String, u64)> = sizes.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(3);
    Ok(v)
}

/// The warning for a big app layer, naming its biggest directories; `None` under [`BIG_LAYER`].
pub fn big_layer_warning(archive: &Path, content_bytes: u64) -> Option<String> {
    if content_bytes <= BIG_LAYER {
        return None;
    }
    let dirs: Vec<String> = match biggest_dirs(archive) {
        Ok(d) => d
            .iter()
            .map(|(d, n)| format!("{d}/ {}", human_bytes(*n)))
            .collect(),
        Err(e) => vec![format!("unknown: {e:#}")],
    };
    Some(format!(
        "the app layer holds {} (biggest: {}): every upload and every pod carries it; add what the app does not need at run time to .aetherignore",
        human_bytes(content_bytes),
        if dirs.is_empty() {
            "no directory".into()
        } else {
            dirs.join(", ")
        }
    ))
}
