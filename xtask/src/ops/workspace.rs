//! The dependency layer of a workspace member: the root's `node_modules` (what the package
//! manager hoisted), overlaid by the member's own, with the sibling packages it depends on
//! copied in as content (in the repository they are links the release could not follow) and the
//! other siblings left out. Keyed by the root's lockfile, the member's path and the content
//! digests of those siblings, so an edit to a shared package makes a new layer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aether_artifact::app::{self, workspace::Workspace, DEPS_DIR};
use anyhow::{Context, Result};

/// What the member's layer is made of.
pub struct Plan {
    pub ws: Workspace,
    /// The sibling packages it depends on, by package name, and where they are.
    pub siblings: BTreeMap<String, PathBuf>,
    /// Every workspace directory the root's `node_modules` links to (left out of the tree).
    linked: BTreeSet<PathBuf>,
}

impl Plan {
    /// Follows the member's dependencies (and theirs) through the workspace links.
    pub fn new(ws: Workspace) -> Result<Plan> {
        let links = workspace_links(&ws)?;
        let mut siblings = BTreeMap::new();
        let mut todo = dependency_names(&ws.root.join(&ws.member));
        let member = fs::canonicalize(ws.root.join(&ws.member))?;
        while let Some(name) = todo.pop_first() {
            let Some(target) = links.get(&name) else {
                continue;
            };
            if *target == member || siblings.contains_key(&name) {
                continue;
            }
            todo.extend(dependency_names(target));
            siblings.insert(name, target.clone());
        }
        let linked = links.into_values().collect();
        Ok(Plan {
            ws,
            siblings,
            linked,
        })
    }

    /// The layer's key: the root lockfile, the member's path, the siblings' content digests.
    pub fn key(&self, node_major: u32) -> Result<Option<app::LockKey>> {
        let Some((name, mut bytes)) = app::workspace::lockfile(&self.ws) else {
            return Ok(None);
        };
        bytes.extend_from_slice(format!("\0member {}", self.ws.member).as_bytes());
        for (pkg, dir) in &self.siblings {
            let packed =
                aether_artifact::pack::pack_dir_with_progress(dir, io::sink(), 1, &|_, _| {})
                    .with_context(|| format!("packing the workspace package {pkg}"))?;
            bytes.extend_from_slice(format!("\0{pkg} {}", packed.digest).as_bytes());
        }
        Ok(Some((
            name,
            app::deps_key(name, &bytes, node_major, &app::platform()),
        )))
    }

    /// Builds the member's `node_modules` under `into` (hard links where the file system
    /// allows, copies else) and returns its path.
    pub fn materialize(&self, into: &Path) -> Result<PathBuf> {
        let out = into.join(DEPS_DIR);
        fs::create_dir_all(&out)?;
        // The root's first, then the member's own over it: the nearest copy wins, as in node.
        for modules in self.ws.modules().iter().rev().filter(|m| m.is_dir()) {
            overlay(modules, &out, &self.linked)?;
        }
        for (name, dir) in &self.siblings {
            let dest = out.join(name);
            remove(&dest)?;
            copy_tree(dir, &dest)?;
        }
        Ok(out)
    }
}

/// The package names the workspace's `node_modules` links to a directory of the workspace
/// (outside `node_modules`), with that directory.
fn workspace_links(ws: &Workspace) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let modules = ws.root.join(DEPS_DIR);
    let inside = |t: &Path| t.starts_with(&ws.root) && !t.starts_with(&modules);
    for (name, path) in packages(&modules)? {
        if fs::symlink_metadata(&path)?.is_symlink() {
            if let Ok(t) = fs::canonicalize(&path) {
                if inside(&t) {
                    out.insert(name, t);
                }
            }
        }
    }
    Ok(out)
}

/// Every package directory entry of a `node_modules` (`name` or `@scope/name`).
fn packages(modules: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(modules) else {
        return Ok(out);
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('@') && e.file_type()?.is_dir() {
            for s in fs::read_dir(e.path())? {
                let s = s?;
                out.push((
                    format!("{name}/{}", s.file_name().to_string_lossy()),
                    s.path(),
                ));
            }
        } else {
            out.push((name, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn dependency_names(pkg: &Path) -> BTreeSet<String> {
    let pj: serde_json::Value = fs::read(pkg.join("package.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    ["dependencies", "optionalDependencies", "peerDependencies"]
        .iter()
        .filter_map(|k| pj[k].as_object())
        .flat_map(|d| d.keys().cloned())
        .collect()
}

/// `from`'s packages into `out`, replacing what is there; `.bin` merged entry by entry; links
/// to workspace directories left out (the siblings the member needs are copied in later).
fn overlay(from: &Path, out: &Path, linked: &BTreeSet<PathBuf>) -> Result<()> {
    for (name, path) in packages(from)? {
        let dest = out.join(&name);
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_symlink() && fs::canonicalize(&path).is_ok_and(|t| linked.contains(&t)) {
            continue;
        }
        if name == ".bin" && meta.is_dir() {
            fs::create_dir_all(&dest)?;
            for e in fs::read_dir(&path)? {
                let e = e?;
                let d = dest.join(e.file_name());
                remove(&d)?;
                copy_tree(&e.path(), &d)?;
            }
            continue;
        }
        remove(&dest)?;
        fs::create_dir_all(dest.parent().expect("inside out"))?;
        copy_tree(&path, &dest)?;
    }
    Ok(())
}

fn remove(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p)?,
        Ok(_) => fs::remove_file(p)?,
        Err(_) => {}
    }
    Ok(())
}

/// A copy of `from` at `to` that keeps symlinks as symlinks and hard-links files when it can.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(from).with_context(|| format!("reading {}", from.display()))?;
    if meta.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)
            .with_context(|| format!("linking {}", to.display()))?;
    } else if meta.is_dir() {
        fs::create_dir_all(to)?;
        for e in fs::read_dir(from)? {
            let e = e?;
            if e.file_name() == ".git" {
                continue;
            }
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
    } else if meta.is_file() && fs::hard_link(from, to).is_err() {
        fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}
