//! Upload: pack an app directory (its app layer, and its dependency layer by lockfile) and make
//! sure the store holds both under their content-addressed keys, with provenance. Shared by
//! `hot-upload`, `deploy-sample`, `dev` and `package`.

use std::path::Path;
use std::time::{Duration, Instant};

use aether_artifact::store::Store;
use aether_artifact::{object_key, AppName, Digest};
use anyhow::{bail, Context, Result};

use crate::config::Global;
use crate::ops::packing::{human_bytes, pack_layout_to_file};

#[derive(Debug, serde::Serialize)]
pub struct Uploaded {
    pub app: String,
    pub digest: Digest,
    pub bytes: u64,
    /// What the app layer expands to.
    pub content_bytes: u64,
    /// False when the object was already in the store.
    pub uploaded: bool,
    pub s3: String,
    pub url: String,
    pub url_expires_in_secs: u64,
    pub pack_ms: u64,
    pub upload_ms: u64,
    /// How the app starts (also in the app layer's release record).
    pub entry: String,
    pub node_major: u32,
    /// The dependency layer (`node_modules`), when the app has one.
    pub deps: Option<crate::ops::deps::Layer>,
    /// Where the provenance record (and its signature, when signed) is.
    pub provenance: crate::ops::signing::Recorded,
    /// The release's number in the control plane's history, when it registered there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered: Option<u64>,
}

impl Uploaded {
    /// One line for people: what happened to the dependency layer, when there is one.
    pub fn deps_line(&self) -> Option<String> {
        let d = self.deps.as_ref()?;
        Some(if d.uploaded {
            format!(
                "dependency layer {} ({}): uploaded {} in {} ms",
                d.deps.digest.short(),
                d.deps.source,
                human_bytes(d.bytes),
                d.ms
            )
        } else {
            format!(
                "dependency layer {} ({}): already in the store, not packed again",
                d.deps.digest.short(),
                d.deps.source
            )
        })
    }

    /// One line for people: what happened to the artifact.
    pub fn summary(&self) -> String {
        let what = if self.uploaded {
            "uploaded"
        } else {
            "already in the store:"
        };
        format!("{what} {} ({})", self.digest.short(), self.s3)
    }
}

/// Refuses, before anything starts (the embedded store, a pod), a directory that is not an app
/// or whose start command or dependency layout cannot run, naming the fix.
pub fn check_app(dir: &Path) -> Result<()> {
    aether_artifact::pack::check_root(dir)?;
    aether_artifact::app::detect(dir).map_err(anyhow::Error::msg)?;
    aether_artifact::app::workspace::find(dir).map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Packs `dir`, makes sure the store holds it, and registers it with `control` when given.
pub fn upload(
    store: &Store,
    control: Option<&aether_artifact::control::Client>,
    global: &Global,
    app: &AppName,
    dir: &Path,
    url_expiry: u64,
    progress: bool,
) -> Result<Uploaded> {
    let start = aether_artifact::app::detect(dir).map_err(anyhow::Error::msg)?;
    for w in &start.warnings {
        eprintln!("warning: {w}");
    }
    let progress = progress && crate::ops::packing::show_progress();
    store.ensure_bucket()?;
    let deps = crate::ops::deps::ensure(store, global, app, dir, start.node_major, progress)?;
    let (record, layout) = app_layout(&start, deps.as_ref().map(|d| d.deps.clone()));
    let t_pack = Instant::now();
    let tmp_dir = global.state_dir().join("tmp");
    std::fs::create_dir_all(&tmp_dir).with_context(|| format!("creating {}", tmp_dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("pack-")
        .suffix(".tar.gz")
        .tempfile_in(&tmp_dir)?;
    let packed = pack_layout_to_file(dir, tmp.path(), progress, &layout)?;
    let pack_ms = t_pack.elapsed().as_millis() as u64;
    if let Some(w) = crate::ops::packing::big_layer_warning(tmp.path(), packed.content_bytes) {
        eprintln!("warning: {w}");
    }

    let key = object_key(app, &packed.digest);
    let t1 = Instant::now();
    let uploaded = if store.exists(&key)? {
        false
    } else {
        let bar = (progress && packed.bytes > 1 << 20).then(|| {
            let bar = indicatif::ProgressBar::new(packed.bytes);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template"),
            );
            bar
        });
        store.put_file(&key, tmp.path(), &mut |n| {
            if let Some(b) = &bar {
                b.inc(n)
            }
        })?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        true
    };
    let provenance = crate::ops::signing::publish(
        store,
        &crate::ops::signing::record(app, dir, &packed, &record, deps.as_ref()),
    )?;
    let upload_ms = t1.elapsed().as_millis() as u64;
    let url = store.presign_get(&key, Duration::from_secs(url_expiry))?;
    let mut up = Uploaded {
        app: app.to_string(),
        digest: packed.digest,
        bytes: packed.bytes,
        content_bytes: packed.content_bytes,
        uploaded,
        s3: store.s3_url(&key),
        url,
        url_expires_in_secs: url_expiry.min(604_800),
        pack_ms,
        upload_ms,
        provenance,
        entry: start.entry,
        node_major: start.node_major,
        deps,
        registered: None,
    };
    if let Some(c) = control {
        let what = crate::ops::registry::Upload {
            digest: up.digest,
            deps: up.deps.as_ref().map(|d| d.deps.digest),
            bytes: up.bytes,
        };
        match crate::ops::registry::register(store, c, app, &what) {
            Ok(seq) => up.registered = Some(seq),
            // The artifact is in the store; the next upload of it registers it.
            Err(e) => eprintln!("warning: not registered with the control plane: {e:#}"),
        }
    }
    Ok(up)
}

/// The app layer of a directory: its release record, and the layout that leaves `node_modules`
/// out and writes the record in. `package` and every upload make it the same way.
pub fn app_layout(
    start: &aether_artifact::app::Start,
    deps: Option<aether_artifact::app::Deps>,
) -> (
    aether_artifact::app::ReleaseRecord,
    aether_artifact::pack::Layout,
) {
    use aether_artifact::app;
    let record = app::ReleaseRecord {
        schema: app::SCHEMA.into(),
        entry: start.entry.clone(),
        args: start.args.clone(),
        node_flags: start.node_flags.clone(),
        env: start.env.clone(),
        port: start.port,
        node_major: start.node_major,
        deps,
    };
    let layout = aether_artifact::pack::Layout {
        exclude_root: vec![app::DEPS_DIR.into()],
        extra: vec![(app::RELEASE_FILE.into(), record.to_json())],
    };
    (record, layout)
}

/// Checks that the store holds `digest` for `app` before anything changes.
pub fn require_in_store(store: &Store, app: &AppName, digest: &Digest) -> Result<()> {
    let key = object_key(app, digest);
    if !store.exists(&key)? {
        bail!("digest {digest} is not in the store for {app} ({}): upload it first with `cargo xtask hot-upload {app} <dir>`", store.s3_url(&key));
    }
    Ok(())
}
