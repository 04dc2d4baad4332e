//! Provenance records and their minisign signatures, on the upload side. The format and the
//! verification live in `aether_artifact::provenance`; this makes and signs the records.

use std::path::Path;

use aether_artifact::pack::Packed;
use aether_artifact::provenance::{self, Git, Layer, Provenance, Source, Tool};
use aether_artifact::store::Store;
use aether_artifact::{AppName, Digest};
use anyhow::Result;

/// The provenance of `dir` packed as `packed`, with the release record it carries and its
/// dependency layer.
pub fn record(
    app: &AppName,
    dir: &Path,
    packed: &Packed,
    release: &aether_artifact::app::ReleaseRecord,
    deps: Option<&crate::ops::deps::Layer>,
) -> Provenance {
    let mut layers = vec![Layer {
        name: "app".into(),
        digest: packed.digest,
        bytes: packed.bytes,
        entries: packed.entries,
        content_bytes: packed.content_bytes,
    }];
    if let Some(d) = deps {
        layers.push(Layer {
            name: aether_artifact::app::DEPS_DIR.into(),
            digest: d.deps.digest,
            bytes: d.size.bytes,
            entries: d.size.entries,
            content_bytes: d.size.content_bytes,
        });
    }
    Provenance {
        schema: provenance::SCHEMA.into(),
        app: app.to_string(),
        digest: packed.digest,
        layers,
        entry_point: release.entry.clone(),
        source: Source {
            dir: dir
                .canonicalize()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| dir.display().to_string()),
            git: git_state(dir),
        },
        tool: Tool {
            name: "aether-dev".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        built_by: user_at_host(),
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }
}

/// Commit and dirtiness of the work tree holding `dir` (untracked files count), without a
/// shell; `None` outside git or without git installed.
fn git_state(dir: &Path) -> Option<Git> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"])?;
    let status = git(&["status", "--porcelain", "--", "."])?;
    Some(Git {
        commit,
        dirty: !status.is_empty(),
    })
}

/// `user@host`, as records and registrations name who made them.
pub fn user_at_host() -> String {
    format!("{}@{}", user(), host())
}

fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid{}", unsafe { libc::getuid() }))
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// What [`publish`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recorded {
    pub provenance: String,
    /// The signature's key, when one was written.
    pub signature: Option<String>,
}

/// Stores the provenance record beside the artifact, and its signature when a signing key is
/// configured. An existing record is kept (the first upload of a digest is where it came
/// from) unless it lacks a signature that can now be made.
pub fn publish(store: &Store, p: &Provenance) -> Result<Recorded> {
    let app = AppName::parse(&p.app)?;
    let key = provenance::key(&app, &p.digest);
    let sig_key = provenance::signature_key(&app, &p.digest);
    let sk = crate::keys::signing_key()?;
    let have_record = store.exists(&key)?;
    let have_sig = store.exists(&sig_key)?;
    if have_record && (have_sig || sk.is_none()) {
        return Ok(Recorded {
            provenance: store.s3_url(&key),
            signature: have_sig.then(|| store.s3_url(&sig_key)),
        });
    }
    let bytes = serde_json::to_vec_pretty(p)?;
    store.put_bytes(&key, &bytes)?;
    let signature = match sk {
        Some(sk) => {
            let sig = minisign::sign(
                None,
                &sk,
                std::io::Cursor::new(&bytes),
                Some(&provenance::trusted_comment(&app, &p.digest)),
                Some("aether-dev provenance signature"),
            )
            .map_err(|e| anyhow::anyhow!("signing the provenance record: {e}"))?;
            store.put_bytes(&sig_key, sig.into_string().as_bytes())?;
            Some(store.s3_url(&sig_key))
        }
        None => None,
    };
    Ok(Recorded {
        provenance: store.s3_url(&key),
        signature,
    })
}

/// The stored record of `digest`, if any (for `hot-status` and `rollback --to`).
pub fn fetch(store: &Store, app: &AppName, digest: &Digest) -> Option<Provenance> {
    let mut buf = Vec::new();
    store
        .get_to_writer(&provenance::key(app, digest), &mut buf)
        .ok()?;
    serde_json::from_slice(&buf).ok()
}
