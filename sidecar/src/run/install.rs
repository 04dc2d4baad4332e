//! Installing `aether-run` on the shared volume, where the stock app image runs it from.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aether_artifact::volume;
use anyhow::{Context, Result};

/// Copies this executable to `<root>/.aether/bin/aether-run` (0755, renamed into place), so the
/// app container can run it from the shared volume. Skipped when the copy is already identical.
pub fn install(root: &Path) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the fetcher's own binary")?;
    let dest = root.join(volume::RUNNER);
    let dir = dest.parent().expect("RUNNER has a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    if fs::read(&dest).is_ok_and(|b| b == bytes) {
        return Ok(dest);
    }
    let tmp = dir.join(format!(".aether-run.tmp{}", std::process::id()));
    fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, &dest).with_context(|| format!("installing {}", dest.display()))?;
    Ok(dest)
}
