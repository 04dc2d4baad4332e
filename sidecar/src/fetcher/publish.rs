//! Making a release live on the volume: `current` swapped by renaming a temporary symlink, the
//! trigger rewritten for `aether-run`, and the leftovers of a crash cleaned at start.

use std::fs;
use std::path::Path;

use aether_artifact::unpack::TMP_PREFIX;
use aether_artifact::{volume, Digest};
use anyhow::{Context, Result};

use super::desired::Wanted;

/// Renames a fresh symlink over `current`: readers see the old tree or the new one, never a mix.
/// The caller makes the rename durable (`sync_dir` of the root) once the switch is under way.
pub fn publish(root: &Path, rel_target: &Path) -> Result<()> {
    let tmp = root.join(format!(
        ".current{}{}",
        TMP_PREFIX.trim_end_matches('-'),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(rel_target, &tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    fs::rename(&tmp, root.join(volume::CURRENT))
        .with_context(|| format!("publishing {}", rel_target.display()))?;
    Ok(())
}

/// `aether-run` watches `.reload/` (and only it), so one change there means one switch, after
/// the new release is already live. The trigger is rewritten in place with one fixed-length
/// write, so a watcher that follows the file's inode (as node's `--watch` did, nodejs/node#51621)
/// sees every change, not only the first.
pub(super) fn trigger_reload(root: &Path, w: &Wanted, inspect: Option<u16>) -> Result<()> {
    write_trigger(
        root,
        &aether_artifact::trigger::line(&w.digest, w.generation, inspect),
    )
}

/// The pod's debug request changed while its release did not: the same release, with the
/// inspector on or off (`aether-run` restarts the app process either way). `false` when there
/// is no trigger yet (the first publish writes it with the request).
pub(super) fn retrigger_inspect(root: &Path, inspect: Option<u16>) -> Result<bool> {
    use aether_artifact::trigger;
    let Ok(line) = fs::read_to_string(root.join(volume::RELOAD_TRIGGER)) else {
        return Ok(false);
    };
    let Some((digest, generation)) = trigger::parse(&line) else {
        return Ok(false);
    };
    if trigger::inspect(&line) == inspect {
        return Ok(false);
    }
    write_trigger(root, &trigger::line(&digest, generation, inspect))?;
    Ok(true)
}

fn write_trigger(root: &Path, line: &str) -> Result<()> {
    use std::io::Write as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(root.join(volume::RELOAD_TRIGGER))
        .context("opening the reload trigger")?;
    f.write_all(line.as_bytes())
        .context("touching the reload trigger")?;
    Ok(())
}

pub(super) fn live_digest(root: &Path) -> Option<Digest> {
    let target = fs::read_link(root.join(volume::CURRENT)).ok()?;
    let d = Digest::parse(&target.file_name()?.to_string_lossy()).ok()?;
    root.join(volume::RELEASES)
        .join(d.to_string())
        .is_dir()
        .then_some(d)
}

/// Temporary extraction directories and symlinks from a crash are garbage: nothing visible
/// ever pointed at them.
pub(super) fn clean_leftovers(root: &Path) -> Result<()> {
    for dir in [
        root.to_path_buf(),
        root.join(volume::RELEASES),
        root.join(volume::LAYERS),
    ]
    .into_iter()
    .chain(
        fs::read_dir(root.join(volume::LAYERS))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    ) {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) || name.starts_with(".current.tmp") {
                let p = e.path();
                let r = if p.is_dir() && !p.is_symlink() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                match r {
                    Ok(()) => log!("removed leftover {}", p.display()),
                    Err(e) => log!("cannot remove leftover {}: {e}", p.display()),
                }
            }
        }
    }
    Ok(())
}
