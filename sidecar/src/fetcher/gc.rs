//! Garbage collection of retired releases and unused dependency layers.
use std::fs;

use aether_artifact::{volume, Digest};

use super::*;

impl Fetcher {
    /// Keeps the live release and the `keep - 1` most recently retired ones; removes older ones
    /// only `gc_grace` after they stopped being live.
    pub(super) fn gc(&mut self) {
        let root = self.cfg.root.join(volume::RELEASES);
        let s = self.status.lock().unwrap().clone();
        let Ok(entries) = fs::read_dir(&root) else {
            return;
        };
        // What `aether-run` runs is in use even when it is not the fetcher's live release: after
        // a failed start of a new release the old one keeps serving, and removing it would
        // delete the code of the process that answers.
        let serving = Status::default()
            .with_runner(&self.cfg.run_status)
            .runner
            .and_then(|r| r.digest);
        let mut retired: Vec<(Digest, u64)> = Vec::new();
        for e in entries.flatten() {
            let Ok(d) = Digest::parse(&e.file_name().to_string_lossy()) else {
                continue;
            };
            // The staged release is about to go live: removing it would make the activation
            // fetch it again, late.
            if Some(d) == s.digest || Some(d) == s.staged || Some(d) == serving {
                continue;
            }
            // A release we never saw retire (from before a restart) counts from our start.
            let at = s
                .retired
                .iter()
                .find(|(x, _)| *x == d)
                .map_or(self.started, |(_, t)| *t);
            retired.push((d, at));
        }
        retired.sort_by_key(|r| std::cmp::Reverse(r.1));
        let now = status::unix_now_ms();
        let mut removed = Vec::new();
        for (d, at) in retired.into_iter().skip(self.cfg.keep.saturating_sub(1)) {
            if now.saturating_sub(at) >= self.cfg.gc_grace.as_millis() as u64 {
                match remove_whole(&root, &d.to_string()) {
                    Ok(()) => {
                        log!("removed old release {}", d.short());
                        removed.push(d);
                    }
                    Err(e) => log!("cannot remove old release {}: {e}", d.short()),
                }
            }
        }
        if !removed.is_empty() {
            self.status
                .lock()
                .unwrap()
                .retired
                .retain(|(d, _)| !removed.contains(d));
            self.save();
        }
        self.gc_layers();
    }

    /// Removes dependency layers no release on disk links to any more.
    pub(super) fn gc_layers(&self) {
        let Ok(entries) = fs::read_dir(self.cfg.root.join(volume::LAYERS)) else {
            return;
        };
        let releases = self.cfg.root.join(volume::RELEASES);
        let used: Vec<std::ffi::OsString> = fs::read_dir(&releases)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read_link(e.path().join(aether_artifact::app::DEPS_DIR)).ok())
            .filter_map(|t| t.parent()?.file_name().map(|n| n.to_os_string()))
            .collect();
        for e in entries.flatten() {
            let name = e.file_name();
            if Digest::parse(&name.to_string_lossy()).is_err() || used.contains(&name) {
                continue;
            }
            match remove_whole(&self.cfg.root.join(volume::LAYERS), &name.to_string_lossy()) {
                Ok(()) => log!("removed unused dependency layer {}", name.to_string_lossy()),
                Err(err) => log!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

/// Removes `dir/name` by renaming it to a temporary name first: a fetcher killed mid-way leaves
/// a `.tmp-` leftover (removed at the next start), never a half-deleted release under its
/// digest, which a rollback would find "on disk" and publish.
fn remove_whole(dir: &std::path::Path, name: &str) -> std::io::Result<()> {
    let trash = dir.join(format!(
        "{}gc-{name}-{}",
        aether_artifact::unpack::TMP_PREFIX,
        std::process::id()
    ));
    fs::rename(dir.join(name), &trash)?;
    fs::remove_dir_all(&trash)
}
