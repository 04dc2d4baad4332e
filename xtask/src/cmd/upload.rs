//! `cargo xtask hot-upload <app> <dir>`: package, then upload to the content-addressed key,
//! skipping the upload when the object is already there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aether_artifact::store::Store;
use aether_artifact::{object_key, AppName, Digest};
use anyhow::{bail, Context, Result};

use super::Ctx;
use crate::config::Global;
use crate::package::{human_bytes, pack_layout_to_file};

#[derive(Debug, serde::Serialize)]
pub struct Uploaded {
    pub app: String,
    pub digest: Digest,
    pub bytes: u64,
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
    pub deps: Option<crate::deps::Layer>,
    /// Where the provenance record (and its signature, when signed) is.
    pub provenance: crate::signing::Recorded,
}

/// Package a directory and upload it, content-addressed, to the target's store.
#[derive(clap::Args)]
pub struct HotUpload {
    app: AppName,
    dir: PathBuf,
    /// Print one JSON object instead of key=value lines.
    #[arg(long)]
    json: bool,
    /// Validity of the presigned URL, in seconds (at most 7 days).
    #[arg(long, default_value_t = 3600)]
    url_expiry: u64,
}

impl HotUpload {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        aether_artifact::pack::check_root(&self.dir)?;
        // The target's store: the configured one, else the embedded store it brings.
        let store = ctx.target().store()?;
        let up = upload(
            &store,
            &ctx.global,
            &self.app,
            &self.dir,
            self.url_expiry,
            !self.json,
        )?;
        if self.json {
            println!("{}", serde_json::to_string(&up)?);
            return Ok(());
        }
        if let Some(line) = up.deps_line() {
            eprintln!("{line}");
        }
        if up.uploaded {
            eprintln!(
                "uploaded {} in {} ms (packed in {} ms)",
                human_bytes(up.bytes),
                up.upload_ms,
                up.pack_ms
            );
        } else {
            eprintln!(
                "already in the store: skipped the upload (packed in {} ms)",
                up.pack_ms
            );
        }
        eprintln!("presigned URL valid for {} s", up.url_expires_in_secs);
        match &up.provenance.signature {
            Some(s) => eprintln!("provenance {} signed ({s})", up.provenance.provenance),
            None => eprintln!(
                "provenance {} (unsigned: set AETHER_SIGNING_KEY to sign)",
                up.provenance.provenance
            ),
        }
        println!("s3={}", up.s3);
        println!("url={}", up.url);
        if let Some(d) = &up.deps {
            println!("deps={}", d.deps.digest);
        }
        println!("digest={}", up.digest);
        Ok(())
    }
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

/// Packs `dir` and makes sure the store holds it. Shared by `hot-upload`, `deploy-sample`
/// and `dev`.
pub fn upload(
    store: &Store,
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
    let progress = progress && crate::package::show_progress();
    store.ensure_bucket()?;
    let deps = crate::deps::ensure(store, global, app, dir, start.node_major, progress)?;
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
    let provenance = crate::signing::publish(
        store,
        &crate::signing::record(app, dir, &packed, &record, deps.as_ref()),
    )?;
    let upload_ms = t1.elapsed().as_millis() as u64;
    let url = store.presign_get(&key, Duration::from_secs(url_expiry))?;
    Ok(Uploaded {
        app: app.to_string(),
        digest: packed.digest,
        bytes: packed.bytes,
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
    })
}

/// The app layer of a directory: its release record, and the layout that leaves `node_modules`
/// out and writes the record in. `package` and every upload make it the same way.
pub fn app_layout(
    start: &aether_artifact::app::Start,
    deps: Option<aether_artifact::app::Deps>,
) -> (aether_artifact::app::Release, aether_artifact::pack::Layout) {
    use aether_artifact::app;
    let record = app::Release {
        schema: app::SCHEMA.into(),
        entry: start.entry.clone(),
        args: start.args.clone(),
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
