//! The dependency layer: `node_modules` packed on its own, content-addressed like the app, and
//! looked up by its lockfile, so an edit to the app uploads only the app's own files.

use std::path::Path;
use std::time::Instant;

use aether_artifact::app::{self, Deps, DEPS_DIR};
use aether_artifact::store::Store;
use aether_artifact::{AppName, Digest};
use anyhow::{Context, Result};

use crate::config::Global;

/// What happened to the dependency layer of one upload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layer {
    #[serde(flatten)]
    pub deps: Deps,
    /// False when the store already had it (found by its key, not packed again).
    pub uploaded: bool,
    /// Compressed bytes uploaded (0 when it was already there).
    pub bytes: u64,
    pub ms: u64,
    /// The layer's own size: compressed bytes, tar entries, bytes of content.
    pub size: Size,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Size {
    pub bytes: u64,
    pub entries: u64,
    pub content_bytes: u64,
}

/// What the store remembers per dependency key.
#[derive(serde::Serialize, serde::Deserialize)]
struct Index {
    digest: Digest,
    native: bool,
    size: Size,
}

/// Where an app's dependency layer comes from: its own `node_modules`, or, for a member of an
/// npm/Yarn workspace, the tree it resolves through the root's (see [`crate::ops::workspace`]).
pub struct Source {
    dir: std::path::PathBuf,
    member: Option<crate::ops::workspace::Plan>,
    /// The lockfile key, when there is a lockfile.
    pub lock: Option<app::LockKey>,
}

impl Source {
    /// `None` when the app has no `node_modules` to ship.
    pub fn of(dir: &Path, node_major: u32) -> Result<Option<Source>> {
        let ws = app::workspace::find(dir).map_err(anyhow::Error::msg)?;
        let member = ws.map(crate::ops::workspace::Plan::new).transpose()?;
        let present = match &member {
            Some(p) => p.ws.modules().iter().any(|m| m.is_dir()),
            None => dir.join(DEPS_DIR).is_dir(),
        };
        if !present {
            return Ok(None);
        }
        let lock = match &member {
            Some(p) => p.key(node_major)?,
            None => app::lock_key(dir, node_major),
        };
        Ok(Some(Source {
            dir: dir.to_path_buf(),
            member,
            lock,
        }))
    }

    /// What it is, for people: `node_modules`, or the workspace and the siblings copied in.
    pub fn describe(&self) -> String {
        match &self.member {
            None => self.dir.join(DEPS_DIR).display().to_string(),
            Some(p) => {
                let sib: Vec<&str> = p.siblings.keys().map(String::as_str).collect();
                format!(
                    "{} as workspace member {} resolves it: the root's node_modules{}",
                    p.ws.root.display(),
                    p.ws.member,
                    if sib.is_empty() {
                        String::new()
                    } else {
                        format!(", with {} copied in", sib.join(", "))
                    }
                )
            }
        }
    }

    /// The tree to pack: the app's `node_modules`, or the member's built under `scratch`.
    pub fn tree(&self, scratch: &Path) -> Result<std::path::PathBuf> {
        match &self.member {
            None => Ok(self.dir.join(DEPS_DIR)),
            Some(p) => p.materialize(scratch),
        }
    }
}

/// Makes sure the store holds the dependency layer of `dir`, if it has a `node_modules`.
pub fn ensure(
    store: &Store,
    global: &Global,
    app: &AppName,
    dir: &Path,
    node_major: u32,
    progress: bool,
) -> Result<Option<Layer>> {
    let t0 = Instant::now();
    let Some(source) = Source::of(dir, node_major)? else {
        if lists_dependencies(dir) {
            eprintln!(
                "warning: package.json lists dependencies but {} is missing: run `npm ci` (or your package manager's install) before uploading",
                dir.join(DEPS_DIR).display()
            );
        }
        return Ok(None);
    };
    let lock = source.lock.clone();
    if let Some((_, key)) = &lock {
        if let Some(ix) = read_index(store, &app::deps_index_key(app, key))? {
            if store.exists(&app::layer_key(app, &ix.digest))? {
                return Ok(Some(Layer {
                    deps: Deps::new(ix.digest, lock.as_ref(), ix.native),
                    uploaded: false,
                    bytes: 0,
                    ms: t0.elapsed().as_millis() as u64,
                    size: ix.size,
                }));
            }
        }
    } else {
        eprintln!(
            "warning: {} has no lockfile ({}): node_modules is packed again on every upload to find its digest; commit a lockfile to skip that",
            dir.display(),
            app::LOCKFILES.join(", ")
        );
    }
    let tmp_dir = global.state_dir().join("tmp");
    std::fs::create_dir_all(&tmp_dir).with_context(|| format!("creating {}", tmp_dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("deps-")
        .suffix(".tar.gz")
        .tempfile_in(&tmp_dir)?;
    if progress {
        eprintln!("packing the dependency layer ({})", source.describe());
    }
    let scratch = tempfile::Builder::new()
        .prefix("deps-tree-")
        .tempdir_in(&tmp_dir)?;
    let modules = source.tree(scratch.path())?;
    let packed = crate::ops::packing::pack_to_file_with(&modules, tmp.path(), progress)?;
    let native = app::has_native_addons(&modules);
    let layer = app::layer_key(app, &packed.digest);
    let uploaded = !store.exists(&layer)?;
    if uploaded {
        store.put_file(&layer, tmp.path(), &mut |_| {})?;
    }
    let deps = Deps::new(packed.digest, lock.as_ref(), native);
    // Written after the layer, so an index never names a layer that is not there.
    let size = Size {
        bytes: packed.bytes,
        entries: packed.entries,
        content_bytes: packed.content_bytes,
    };
    let ix = Index {
        digest: packed.digest,
        native,
        size,
    };
    store.put_bytes(
        &app::deps_index_key(app, &deps.key),
        &serde_json::to_vec(&ix).expect("an index serialises"),
    )?;
    Ok(Some(Layer {
        deps,
        uploaded,
        bytes: if uploaded { packed.bytes } else { 0 },
        ms: t0.elapsed().as_millis() as u64,
        size,
    }))
}

fn read_index(store: &Store, key: &str) -> Result<Option<Index>> {
    if !store.exists(key)? {
        return Ok(None);
    }
    let mut buf = Vec::new();
    store.get_to_writer(key, &mut buf)?;
    // An index that does not parse is rebuilt, not trusted.
    Ok(serde_json::from_slice(&buf).ok())
}

fn lists_dependencies(dir: &Path) -> bool {
    std::fs::read(dir.join("package.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|p| p["dependencies"].as_object().map(|d| !d.is_empty()))
        .unwrap_or(false)
}
