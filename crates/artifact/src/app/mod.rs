//! How a Node.js app is started and what it depends on: read once from the app's directory when
//! it is packed, and recorded in the app layer itself ([`RELEASE_FILE`]), so the fetcher (which
//! fetches the dependency layer it names) and `aether-run` (which starts its entry point) read
//! the same record, on every target, and the artifact's digest covers it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::{AppName, Digest, KEY_PREFIX};

mod bin;
mod settings;
mod start;
pub mod workspace;

pub use settings::Settings;
pub use start::{detect, standby_safe, Start};

/// The release record at the root of every app layer.
pub const RELEASE_FILE: &str = ".aether-release.json";
pub const SCHEMA: &str = "aether.dev/release/v1";
/// The dependency directory, packed as its own layer and left out of the app layer.
pub const DEPS_DIR: &str = "node_modules";
/// Lockfiles, in the order they are looked for: the first present names the dependency layer.
pub const LOCKFILES: [&str; 4] = [
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
];
pub const DEFAULT_NODE_MAJOR: u32 = 20;
/// The entry point of a release without a record (packed before records existed).
pub const LEGACY_ENTRY: &str = "server.js";

/// What [`RELEASE_FILE`] holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRecord {
    pub schema: String,
    /// Path of the entry point inside the release, e.g. `index.js`.
    pub entry: String,
    /// Arguments after the entry point (from `scripts.start`).
    #[serde(default)]
    pub args: Vec<String>,
    /// Node's flags, before the entry point. Left out when empty, as `env` and `port`, so the
    /// records (and digests) of apps without them are what they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_flags: Vec<String>,
    /// Variables set for the app.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The port the app listens on when it does not read `PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub node_major: u32,
    /// The dependency layer, published as `node_modules` beside the app's files.
    pub deps: Option<Deps>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deps {
    /// The layer's content digest (what the fetcher verifies).
    pub digest: Digest,
    /// What the layer was looked up by: the lockfile's hash with the Node major and platform,
    /// or the layer's own digest when there is no lockfile.
    pub key: String,
    /// The lockfile it came from, or `node_modules` when there was none.
    pub source: String,
    /// Whether it holds native addons (`*.node`), built for the host's platform and libc.
    pub native: bool,
}

/// How a dependency layer is looked up: by its lockfile, `(lockfile name, key)`.
pub type LockKey = (&'static str, String);

/// The lockfile key of `dir`'s dependency layer, or `None` without a lockfile.
pub fn lock_key(dir: &Path, node_major: u32) -> Option<LockKey> {
    let (name, bytes) = lockfile(dir)?;
    Some((name, deps_key(name, &bytes, node_major, &platform())))
}

impl Deps {
    /// The record of a layer with `digest`: keyed by its lockfile, or by its own digest when
    /// there is none.
    pub fn new(digest: Digest, lock: Option<&LockKey>, native: bool) -> Deps {
        Deps {
            digest,
            key: lock.map_or_else(|| digest.to_string(), |l| l.1.clone()),
            source: lock.map_or(DEPS_DIR, |l| l.0).into(),
            native,
        }
    }
}

impl ReleaseRecord {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a release record serialises");
        v.push(b'\n');
        v
    }

    /// The record in an extracted release; `None` for a release packed before records existed
    /// (it starts as `node server.js`, without a dependency layer).
    pub fn read(release_dir: &Path) -> Result<Option<ReleaseRecord>, String> {
        let p = release_dir.join(RELEASE_FILE);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }
}

/// The object key of a dependency layer: `artifacts/<app>/<digest>/node_modules.tar.gz`.
pub fn layer_key(app: &AppName, digest: &Digest) -> String {
    format!("{KEY_PREFIX}{app}/{digest}/{DEPS_DIR}.tar.gz")
}

/// The object that maps a dependency key to its layer's digest: `artifacts/<app>/deps/<key>`.
pub fn deps_index_key(app: &AppName, key: &str) -> String {
    format!("{KEY_PREFIX}{app}/deps/{key}")
}

/// The dependency key for a lockfile: its bytes, its name, the Node major and the platform the
/// modules were installed on, so a new Node major or another machine's addons get a new layer.
pub fn deps_key(lockfile: &str, bytes: &[u8], node_major: u32, platform: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        b"aether-deps-v1".as_slice(),
        lockfile.as_bytes(),
        bytes,
        node_major.to_string().as_bytes(),
        platform.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    Digest::from_bytes(h.finalize().into()).to_string()
}

/// The lockfile beside `package.json`, if any: `(name, bytes)`.
pub fn lockfile(dir: &Path) -> Option<(&'static str, Vec<u8>)> {
    LOCKFILES
        .iter()
        .find_map(|n| fs::read(dir.join(n)).ok().map(|b| (*n, b)))
}

/// The platform installed modules are built for: the host's, as Node names it.
pub fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        a => a,
    };
    format!("{}-{arch}", std::env::consts::OS)
}

/// Whether a tree holds native addons (`*.node` files).
pub fn has_native_addons(dir: &Path) -> bool {
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let Ok(ft) = e.file_type() else { return false };
        if ft.is_dir() {
            has_native_addons(&e.path())
        } else {
            ft.is_file() && e.file_name().to_string_lossy().ends_with(".node")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deps_keys_change_with_every_input() {
        let k = deps_key("package-lock.json", b"{}", 20, "linux-x64");
        assert_eq!(k, deps_key("package-lock.json", b"{}", 20, "linux-x64"));
        for other in [
            deps_key("yarn.lock", b"{}", 20, "linux-x64"),
            deps_key("package-lock.json", b"{ }", 20, "linux-x64"),
            deps_key("package-lock.json", b"{}", 22, "linux-x64"),
            deps_key("package-lock.json", b"{}", 20, "linux-arm64"),
        ] {
            assert_ne!(k, other);
        }
    }

    #[test]
    fn release_records_round_trip_and_refuse_unknown_fields() {
        let r = ReleaseRecord {
            schema: SCHEMA.into(),
            entry: "index.js".into(),
            args: vec![],
            node_flags: vec!["--enable-source-maps".into()],
            env: BTreeMap::from([("NODE_ENV".into(), "production".into())]),
            port: Some(8080),
            node_major: 20,
            deps: None,
        };
        let t = tempfile::tempdir().unwrap();
        assert_eq!(ReleaseRecord::read(t.path()), Ok(None));
        fs::write(t.path().join(RELEASE_FILE), r.to_json()).unwrap();
        assert_eq!(ReleaseRecord::read(t.path()), Ok(Some(r)));
        fs::write(
            t.path().join(RELEASE_FILE),
            br#"{"schema":"x","entry":"a","node_major":1,"deps":null,"extra":1}"#,
        )
        .unwrap();
        assert!(ReleaseRecord::read(t.path()).is_err());
    }
}
