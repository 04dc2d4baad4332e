//! Download and verified extraction: the object streamed from the store through the contract's
//! unpacking into a temporary directory, and each failure explained with its cause and fix.
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use aether_artifact::control::Client;
use aether_artifact::store::{ErrorKind, PartialStore, Store, StoreError, Timeouts, UrlSource};
use aether_artifact::unpack::{unpack_verified, UnpackError, TMP_PREFIX};
use aether_artifact::{object_key, volume, AppName, Digest};
use anyhow::{anyhow, Context, Result};

use super::verify::*;
use super::*;

impl Fetcher {
    /// Streams the object through a pipe into the verified unpacker: nothing touches the disk
    /// unverified under a visible name, and memory stays flat whatever the artifact's size.
    pub(super) fn fetch(
        &self,
        app: &AppName,
        digest: &Digest,
        dest: &Path,
        deadline: Instant,
    ) -> Result<Fetched> {
        self.fetch_object(app, &object_key(app, digest), digest, dest, deadline, true)
    }

    /// As [`Fetcher::fetch`] for any content-addressed object (`signed`: check the provenance
    /// signature first, for an app layer; a dependency layer is bound by the app layer's record).
    pub(super) fn fetch_object(
        &self,
        app: &AppName,
        key: &str,
        digest: &Digest,
        dest: &Path,
        deadline: Instant,
        signed: bool,
    ) -> Result<Fetched> {
        let t0 = Instant::now();
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let store = self.store(app, left)?;
        let key = key.to_string();
        let (reader, mut writer) = io::pipe()?;
        let limits = aether_artifact::unpack::Limits {
            deadline: Some(deadline),
            ..self.cfg.limits
        };
        let timeouts = Timeouts {
            connect: self.cfg.connect_timeout,
            stall: self.cfg.stall_timeout,
            total: left,
        };
        if let (Some(pk), true) = (&self.cfg.public_key, signed) {
            verify_signature(&store, pk, app, digest, &timeouts)?;
        }
        let (got, unpacked) = std::thread::scope(|s| {
            let key = &key;
            let store = &store;
            let dl = s.spawn(move || {
                let r = store.get_with_timeouts(key, &mut writer, &timeouts);
                drop(writer);
                (r, Instant::now())
            });
            let unpacked = unpack_verified(reader, digest, dest, &limits);
            (dl.join().expect("download thread panicked"), unpacked)
        });
        let ((got, downloaded), done) = (got, Instant::now());
        let fetched = |bytes| Fetched {
            fetched: true,
            bytes,
            download: downloaded - t0,
            tail: done.saturating_duration_since(downloaded),
        };
        let unpacked = unpacked.map_err(|u| self.explain(u, &store, &key));
        match (got, unpacked) {
            (Ok(n), Ok(_)) => Ok(fetched(n)),
            // The unpacker stopped reading (it refused the archive): its error is the cause, the
            // broken pipe the download then saw is not.
            (Err(e), Err(u)) if e.kind == ErrorKind::Sink => {
                Err(u.context(format!("verifying {}", digest.short())))
            }
            // The store's error explains a truncated stream better than the unpacker's.
            (Err(e), _) => Err(anyhow!(e)),
            (Ok(_), Err(e))
                if matches!(e.downcast_ref::<UnpackError>(),
                    Some(UnpackError::Io { path, err })
                        if path == dest && err.kind() == io::ErrorKind::AlreadyExists) =>
            {
                // Another pass (or a previous run) finished the same digest: fine.
                Ok(Fetched::default())
            }
            (Ok(_), Err(e)) => Err(e.context(format!("verifying {}", digest.short()))),
        }
    }

    /// The store client of one pass: with a control plane, one that holds no key and asks it
    /// for each URL; else one with the pod's read key.
    fn store(&self, app: &AppName, left: Duration) -> Result<Store> {
        let Some((url, token_file)) = &self.cfg.control else {
            let cfg = PartialStore::from_env()
                .finish()
                .map_err(cause::ConfigError)?;
            return Ok(Store::with_timeout(cfg, left)?);
        };
        let client = Client::with_token_file(url, token_file, left.min(Duration::from_secs(10)));
        let source = ControlUrls {
            app: app.clone(),
            client,
        };
        let ca = PartialStore::from_env().ca_file;
        Ok(Store::through(url, Box::new(source), ca, left)?)
    }

    /// Makes the release's dependency layer (named by its record) present under `.layers/` and
    /// links it as `<release>/node_modules`, before the release can go live. Returns the layer's
    /// digest and the bytes downloaded.
    pub(super) fn ensure_deps(
        &self,
        app: &AppName,
        release: &Path,
        deadline: Instant,
    ) -> Result<(Option<Digest>, Fetched)> {
        use aether_artifact::app;
        let record = app::ReleaseRecord::read(release)
            .map_err(|e| anyhow!("the release record is unreadable: {e}"))?;
        let Some(deps) = record.and_then(|r| r.deps) else {
            return Ok((None, Fetched::default()));
        };
        let layers = self.cfg.root.join(volume::LAYERS);
        fs::create_dir_all(&layers).with_context(|| format!("creating {}", layers.display()))?;
        // `.layers/<digest>/node_modules`, not `.layers/<digest>`: node resolves a package to its
        // real path and looks for that package's own dependencies in the `node_modules`
        // directories above it, so the layer must sit in a directory of that name.
        let layer = layers.join(deps.digest.to_string());
        fs::create_dir_all(&layer).with_context(|| format!("creating {}", layer.display()))?;
        let dir = layer.join(app::DEPS_DIR);
        let mut got = Fetched::default();
        if !dir.is_dir() {
            let key = app::layer_key(app, &deps.digest);
            got = self
                .fetch_object(app, &key, &deps.digest, &dir, deadline, false)
                .with_context(|| format!("dependency layer {}", deps.digest.short()))?;
        }
        let link = release.join(app::DEPS_DIR);
        let target = Path::new("..")
            .join("..")
            .join(volume::LAYERS)
            .join(deps.digest.to_string())
            .join(app::DEPS_DIR);
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let tmp = release.join(format!("{TMP_PREFIX}{}", app::DEPS_DIR));
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            fs::rename(&tmp, &link).with_context(|| format!("creating {}", link.display()))?;
            if self.cfg.limits.durable {
                aether_artifact::unpack::sync_dir(release)
                    .with_context(|| format!("syncing {}", release.display()))?;
            }
        }
        Ok((Some(deps.digest), got))
    }

    /// The unpacker's error, with what an operator needs for the volume's own failures: the
    /// sizes when it is full, the user when it is not writable.
    pub(super) fn explain(&self, u: UnpackError, store: &Store, key: &str) -> anyhow::Error {
        let UnpackError::Io { err, .. } = &u else {
            return anyhow!(u);
        };
        match cause::io_cause(err) {
            Some(aether_artifact::Cause::NoSpace) => {
                let room = cause::space(&self.cfg.root)
                    .map(|(free, total)| {
                        format!(
                            "{} free of {}",
                            aether_artifact::human_bytes(free),
                            aether_artifact::human_bytes(total)
                        )
                    })
                    .unwrap_or_else(|| "size unknown".into());
                let size = store
                    .size(key)
                    .ok()
                    .flatten()
                    .map(|n| {
                        format!(
                            "the artifact is {} compressed, more unpacked",
                            aether_artifact::human_bytes(n)
                        )
                    })
                    .unwrap_or_else(|| "the artifact's size is unknown".into());
                anyhow!(u).context(format!(
                    "no space left on the volume at {} ({room} after removing the partial \
                     release; {size}): give the volume more room (emptyDir sizeLimit) or keep \
                     fewer releases (--keep)",
                    self.cfg.root.display()
                ))
            }
            Some(aether_artifact::Cause::PermissionDenied) => {
                // SAFETY: geteuid cannot fail.
                let uid = unsafe { libc::geteuid() };
                anyhow!(u).context(format!(
                    "permission denied: the fetcher runs as uid {uid} and cannot write there: \
                     make the volume writable for it (pod securityContext fsGroup)"
                ))
            }
            _ => anyhow!(u),
        }
    }
}

/// Read URLs, one per object, from the control plane, which checks that this pod is one of
/// `app`'s before it signs anything.
struct ControlUrls {
    app: AppName,
    client: Client,
}

impl UrlSource for ControlUrls {
    fn get_url(&self, key: &str) -> Result<String, StoreError> {
        let mut got = self.client.read_urls(&self.app, &[key.to_string()])?;
        got.urls.pop().ok_or_else(|| StoreError {
            kind: ErrorKind::Other,
            op: format!("asking for a URL of {key}"),
            endpoint: self.client.base().to_string(),
            detail: "the control plane answered no URL".into(),
        })
    }
}
