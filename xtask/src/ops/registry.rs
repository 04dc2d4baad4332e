//! The control plane seen from the CLI: every upload registered with its provenance, and the
//! release history read back. Registration never blocks an upload: the artifact is in the
//! store either way, and registering again (any later upload of the digest) is a no-op that
//! fills the gap.

use aether_artifact::control::{Client, Register, ReleaseEntry};
use aether_artifact::store::{ErrorKind, Store};
use aether_artifact::{provenance, AppName, Digest};
use anyhow::{Context, Result};

/// Who registers: `AETHER_PUBLISHED_BY` (a CI job names itself), else `user@host`.
pub fn publisher() -> String {
    std::env::var("AETHER_PUBLISHED_BY")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(crate::ops::signing::user_at_host)
}

/// What an upload put in the store, as registration needs it.
pub struct Upload {
    pub digest: Digest,
    pub deps: Option<Digest>,
    pub bytes: u64,
}

/// Registers an upload with the record and signature exactly as the store holds them; the
/// release's number in the app's history.
pub fn register(store: &Store, control: &Client, app: &AppName, up: &Upload) -> Result<u64> {
    let get = |key: &str| -> Result<Option<String>> {
        let mut buf = Vec::new();
        match store.get_to_writer(key, &mut buf) {
            Ok(_) => Ok(Some(String::from_utf8_lossy(&buf).into_owned())),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let record = get(&provenance::key(app, &up.digest))?
        .context("the provenance record is not in the store: upload again")?;
    let p: provenance::Provenance =
        serde_json::from_str(&record).context("the stored provenance record is unreadable")?;
    let r = Register {
        digest: up.digest,
        deps: up.deps,
        bytes: up.bytes,
        published_by: publisher(),
        git_commit: p.source.git.map(|g| g.commit),
        provenance: record,
        signature: get(&provenance::signature_key(app, &up.digest))?,
    };
    Ok(control.register(app, &r)?.entry.seq)
}

/// `app`'s registered releases, newest first; `None` when the target has no control plane.
pub fn history(control: Option<&Client>, app: &AppName) -> Result<Option<Vec<ReleaseEntry>>> {
    control
        .map(|c| c.releases(app).map_err(anyhow::Error::from))
        .transpose()
}

/// One release `rollback --to` offers.
#[derive(Debug, serde::Serialize)]
pub struct Recent {
    pub digest: Digest,
    pub live: bool,
    pub provenance: Option<provenance::Provenance>,
    /// Its number in the control plane's history, when registered there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_at_ms: Option<u64>,
}

impl Recent {
    pub fn line(&self) -> String {
        let what = self
            .provenance
            .as_ref()
            .map(|p| p.summary())
            .unwrap_or_else(|| format!("{} (no provenance record)", self.digest.short()));
        let seq = self.seq.map(|n| format!("#{n} ")).unwrap_or_default();
        format!(
            "{} {} {seq}{what}",
            if self.live { "live" } else { "    " },
            self.digest
        )
    }
}

/// What `rollback --to` lists: the control plane's whole history when the target has one,
/// else the release's last digests with their records from the store. Also says which.
pub fn recent(
    control: Option<&Client>,
    store: &Store,
    app: &AppName,
    cur: &crate::release::Release,
) -> Result<(Vec<Recent>, &'static str)> {
    if let Some(list) = history(control, app)? {
        let recent = list
            .into_iter()
            .map(|e| Recent {
                digest: e.digest,
                live: cur.digest == Some(e.digest),
                provenance: serde_json::from_str(&e.provenance).ok(),
                seq: Some(e.seq),
                published_by: Some(e.published_by),
                published_at_ms: Some(e.published_at_ms),
            })
            .collect();
        return Ok((recent, "control-plane"));
    }
    let recent = cur
        .digest
        .iter()
        .map(|d| (*d, true))
        .chain(cur.history.iter().map(|d| (*d, false)))
        .map(|(digest, live)| Recent {
            digest,
            live,
            provenance: crate::ops::signing::fetch(store, app, &digest),
            seq: None,
            published_by: None,
            published_at_ms: None,
        })
        .collect();
    Ok((recent, "release-history"))
}

/// `hot-status`'s view of the control plane.
#[derive(Debug, serde::Serialize)]
pub struct ControlView {
    pub url: Option<String>,
    /// Registered releases of the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub releases: Option<u64>,
    /// The wanted release's entry, when registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wanted: Option<ReleaseEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlView {
    pub fn line(&self) -> String {
        if let Some(e) = &self.error {
            return format!("control plane: {e}");
        }
        let n = self.releases.unwrap_or(0);
        match &self.wanted {
            Some(w) => format!(
                "control plane: release #{} of {n} registered, published by {}",
                w.seq, w.published_by
            ),
            None => format!("control plane: the wanted release is not registered ({n} are)"),
        }
    }
}

/// The control plane as `hot-status` reports it; `None` when the target has none.
pub fn view(
    t: &dyn crate::targets::Target,
    app: &AppName,
    wanted: Option<Digest>,
) -> Option<ControlView> {
    let client = match t.control_if_running() {
        Ok(Some(c)) => c,
        Ok(None) => return None,
        Err(e) => {
            return Some(ControlView {
                url: None,
                releases: None,
                wanted: None,
                error: Some(format!("{e:#}")),
            })
        }
    };
    let url = Some(client.base().to_string());
    Some(match client.releases(app) {
        Ok(list) => ControlView {
            url,
            releases: Some(list.len() as u64),
            wanted: list.into_iter().find(|e| Some(e.digest) == wanted),
            error: None,
        },
        Err(e) => ControlView {
            url,
            releases: None,
            wanted: None,
            error: Some(e.to_string()),
        },
    })
}
