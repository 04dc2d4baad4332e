//! `cargo xtask dev <app> [dir]`: watch mode. Debounced file watching, then package → upload →
//! publish → wait until served, one line per cycle with each stage's time. The same on every
//! target.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aether_artifact::store::Store;
use aether_artifact::AppName;
use anyhow::{Context, Result};

use super::Ctx;
use crate::config::Global;
use crate::cutover::{self, CutoverArgs, Reload, Trace};
use crate::target::{DeployOpts, Target};

/// Watch a directory and hot-reload the app on every save.
#[derive(clap::Args)]
pub struct Dev {
    app: AppName,
    dir: Option<PathBuf>,
    /// Quiet time after the last change before a cycle starts, in milliseconds.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// Print each cycle's trace as one JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cutover: CutoverArgs,
}

impl Dev {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let app = &self.app;
        let dir: PathBuf = match &self.dir {
            Some(d) => d.clone(),
            None => super::deploy::sample_dir(&ctx.global)?,
        };
        let t = ctx.target();
        if t.statuses(app)?.is_empty() {
            eprintln!("no running pod of {app}: deploying first");
            let opts = DeployOpts {
                image_import: std::env::var("AETHER_IMAGE_IMPORT").ok(),
                ..Default::default()
            };
            super::deploy::deploy(&*t, &ctx.global, app, &dir, Duration::from_secs(60), &opts)?;
        }
        let store = t.store()?;
        let debounce = Duration::from_millis(self.debounce_ms);
        let (tx, rx) = std::sync::mpsc::channel();
        // notify itself, not a debouncer crate: packing opens every file, and notify reports
        // opens; a debouncer that hides the event kind would turn each cycle's own reads into
        // the next cycle, for ever. Reads, `.git` and `node_modules` are not edits.
        let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            let edit = e.is_ok_and(|e| {
                !e.kind.is_access()
                    && !e.paths.iter().all(|p| {
                        p.components().any(|c| {
                            c.as_os_str() == ".git"
                                || c.as_os_str() == aether_artifact::app::DEPS_DIR
                        })
                    })
            });
            if edit {
                let _ = tx.send(());
            }
        })
        .context("starting the file watcher")?;
        notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        eprintln!(
            "watching {} (debounce {debounce:?}); Ctrl-C to stop",
            dir.display()
        );
        while rx.recv().is_ok() {
            let saved = Instant::now();
            // Quiet time: an editor's save is several events; wait until they stop.
            while rx.recv_timeout(debounce).is_ok() {}
            match cycle(&*t, &store, &ctx.global, app, &dir, saved, &self.cutover) {
                Ok(c) if self.json => println!("{}", serde_json::to_string(&c.trace)?),
                Ok(c) => println!(
                    "{}",
                    c.trace
                        .as_ref()
                        .map(Trace::line)
                        .unwrap_or_else(|| c.line())
                ),
                Err(e) => eprintln!("cycle failed, still serving the previous version: {e:#}"),
            }
        }
        Ok(())
    }
}

/// Times of one edit-to-served cycle.
#[derive(Debug, Clone)]
pub struct Cycle {
    pub pack: Duration,
    pub upload: Duration,
    pub patch: Duration,
    /// From the patch until the fetchers published and the app, switched to it, answered.
    pub served: Duration,
    pub total: Duration,
    /// Bytes sent to the store: the app layer when it was new, and a new dependency layer.
    pub uploaded: u64,
    /// Per stage, from the pods' own timestamps (`None` when nothing changed).
    pub trace: Option<Trace>,
}

impl Cycle {
    pub fn line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "pack {:.0} ms | upload {:.0} ms | patch {:.0} ms | fetch+switch+first response {:.0} ms | save to served {:.0} ms",
            ms(self.pack),
            ms(self.upload),
            ms(self.patch),
            ms(self.served),
            ms(self.total)
        )
    }
}

/// One cycle: package and upload `dir`, make it the wanted release (through the barrier when
/// it applies), wait until every pod serves it. `saved` is when the edit happened.
pub fn cycle(
    t: &dyn Target,
    store: &Store,
    global: &Global,
    app: &AppName,
    dir: &Path,
    saved: Instant,
    args: &CutoverArgs,
) -> Result<Cycle> {
    let saved_ms = cutover::now_ms() - saved.elapsed().as_millis() as u64;
    let up_ms = cutover::now_ms();
    let up = super::upload::upload(store, global, app, dir, 3600, false)?;
    let t_patch = Instant::now();
    let r = Reload {
        app,
        digest: up.digest,
        marks: vec![
            ("save", saved_ms),
            ("debounce", up_ms),
            ("pack", up_ms + up.pack_ms),
            ("upload", up_ms + up.pack_ms + up.upload_ms),
        ],
        wait: Some(Duration::from_secs(30)),
    };
    let o = cutover::roll(t, r, args, &mut |cur| Ok(cur.next(up.digest)))?;
    let end = Instant::now();
    let trace = o.and_then(|o| o.trace);
    let served = trace
        .as_ref()
        .map(|tr| {
            Duration::from_millis(
                tr.stages
                    .iter()
                    .skip_while(|s| s.stage != "signal" && s.stage != "stage signal")
                    .skip(1)
                    .map(|s| s.ms)
                    .sum(),
            )
        })
        .unwrap_or_default();
    Ok(Cycle {
        pack: Duration::from_millis(up.pack_ms),
        upload: Duration::from_millis(up.upload_ms),
        patch: trace
            .as_ref()
            .and_then(|tr| tr.stages.iter().find(|s| s.stage.ends_with("signal")))
            .map_or(end - t_patch, |s| Duration::from_millis(s.ms)),
        served,
        total: trace
            .as_ref()
            .map_or(end - saved, |tr| Duration::from_millis(tr.total_ms)),
        uploaded: if up.uploaded { up.bytes } else { 0 } + up.deps.as_ref().map_or(0, |d| d.bytes),
        trace,
    })
}
