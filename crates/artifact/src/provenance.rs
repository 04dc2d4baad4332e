//! Where an artifact came from, and who vouches for it: `artifacts/<app>/<digest>/provenance.json`
//! beside the artifact, and when the uploader has a signing key, `provenance.json.minisig`, a
//! minisign (Ed25519) signature of exactly those bytes. The record names the artifact's
//! digest, so the signature covers the artifact through it (the in-toto/SLSA pattern: sign a
//! statement about a digest), and it can be checked before a single byte of the artifact is
//! downloaded. Anyone can verify with the stock tool:
//! `minisign -Vm provenance.json -p aether.pub`, then compare `.digest` with `sha256sum app.tar.gz`.

use serde::{Deserialize, Serialize};

use crate::{AppName, Digest, KEY_PREFIX};

/// The schema of `provenance.json`; bump on incompatible changes.
pub const SCHEMA: &str = "aether.dev/provenance/v1";

pub fn key(app: &AppName, digest: &Digest) -> String {
    format!("{KEY_PREFIX}{app}/{digest}/provenance.json")
}

pub fn signature_key(app: &AppName, digest: &Digest) -> String {
    format!("{}.minisig", key(app, digest))
}

/// The trusted comment every signature carries (minisign signs it too), so a signature shown
/// alone still says what it vouches for.
pub fn trusted_comment(app: &AppName, digest: &Digest) -> String {
    format!("aether-artifact app={app} digest={digest}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub schema: String,
    pub app: String,
    pub digest: Digest,
    /// The artifact's layers: the app, and its `node_modules` when it has one.
    pub layers: Vec<Layer>,
    /// What the app container runs, relative to the release root.
    pub entry_point: String,
    pub source: Source,
    pub tool: Tool,
    /// `user@host` that uploaded it.
    pub built_by: String,
    /// RFC 3339, when it was packed.
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub name: String,
    pub digest: Digest,
    /// Compressed bytes.
    pub bytes: u64,
    /// Tar entries (files, directories, symlinks).
    pub entries: u64,
    pub content_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The packed directory's name (not its full path: that would leak a home directory).
    pub dir: String,
    /// `None` when the directory is not inside a git work tree.
    pub git: Option<Git>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Git {
    pub commit: String,
    /// Whether the packed directory had uncommitted changes (tracked or untracked).
    pub dirty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

impl Provenance {
    /// One line for people.
    pub fn summary(&self) -> String {
        let git = match &self.source.git {
            Some(g) => format!(
                "commit {}{}",
                &g.commit[..g.commit.len().min(12)],
                if g.dirty { " (dirty)" } else { "" }
            ),
            None => "no git".into(),
        };
        let deps = self
            .layers
            .iter()
            .find(|l| l.name == crate::app::DEPS_DIR)
            .map(|l| format!(" + {} {}", l.name, l.digest.short()))
            .unwrap_or_default();
        format!(
            "{}{deps} from {} ({git}) by {} at {} with {} {}",
            self.digest.short(),
            self.source.dir,
            self.built_by,
            self.created_at,
            self.tool.name,
            self.tool.version
        )
    }
}

/// Why a release's signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the release is not signed ({key} is missing) and this fetcher requires signatures: upload it with a signing key (AETHER_SIGNING_KEY)")]
    Unsigned { key: String },
    #[error("bad signature on {key}: {why}; the record was not signed by the configured key, or was changed after signing")]
    Bad { key: String, why: String },
    #[error("the signed record {key} is for {what}, not this release; refusing it")]
    Mismatch { key: String, what: String },
    #[error("the configured public key is not a minisign public key: {0}")]
    Key(String),
}

/// Checks `sig` over `record` with `public_key` (minisign base64, or the two-line `.pub` file),
/// then that the record names `app` and `digest`. Returns the parsed record.
pub fn verify(
    public_key: &str,
    app: &AppName,
    digest: &Digest,
    record: &[u8],
    sig: &str,
) -> Result<Provenance, SignatureError> {
    let key = key(app, digest);
    let pk = parse_public_key(public_key)?;
    let bad = |why: String| SignatureError::Bad {
        key: format!("{key}.minisig"),
        why,
    };
    let sig = minisign_verify::Signature::decode(sig).map_err(|e| bad(e.to_string()))?;
    pk.verify(record, &sig, false)
        .map_err(|e| bad(e.to_string()))?;
    if sig.trusted_comment() != trusted_comment(app, digest) {
        return Err(SignatureError::Mismatch {
            key: key.clone(),
            what: format!("\"{}\"", sig.trusted_comment()),
        });
    }
    let p: Provenance = serde_json::from_slice(record).map_err(|e| bad(e.to_string()))?;
    if p.digest != *digest || p.app != app.as_str() {
        return Err(SignatureError::Mismatch {
            key,
            what: format!("{} {}", p.app, p.digest.short()),
        });
    }
    Ok(p)
}

/// The key's id as minisign writes it in the `.pub` file's comment ("minisign public key
/// <ID>", 16 hex digits), so what a fetcher verifies with can be matched against `aether.pub`.
pub fn key_id(public_key: &str) -> Result<String, SignatureError> {
    use base64::Engine as _;
    parse_public_key(public_key)?;
    let b64 = public_key
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or_default();
    let bin = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| SignatureError::Key(e.to_string()))?;
    let id: [u8; 8] = bin
        .get(2..10)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SignatureError::Key("too short".into()))?;
    Ok(format!("{:016X}", u64::from_le_bytes(id)))
}

fn parse_public_key(s: &str) -> Result<minisign_verify::PublicKey, SignatureError> {
    let s = s.trim();
    let r = if s.contains('\n') {
        minisign_verify::PublicKey::decode(s)
    } else {
        minisign_verify::PublicKey::from_base64(s)
    };
    r.map_err(|e| SignatureError::Key(e.to_string()))
}
