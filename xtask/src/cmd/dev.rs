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
use crate::target::{DeployOpts, Target};

/// Watch a directory and hot-reload the app on every save.
#[derive(clap::Args)]
pub struct Dev {
    app: AppName,
    dir: Option<PathBuf>,
    /// Quiet time after the last change before a cycle starts, in milliseconds.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
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
        let mut debouncer = notify_debouncer_mini::new_debouncer(debounce, tx)
            .context("starting the file watcher")?;
        debouncer
            .watcher()
            .watch(
                &dir,
                notify_debouncer_mini::notify::RecursiveMode::Recursive,
            )
            .with_context(|| format!("watching {}", dir.display()))?;
        eprintln!(
            "watching {} (debounce {debounce:?}); Ctrl-C to stop",
            dir.display()
        );
        for events in rx {
            let Ok(events) = events else { continue };
            // Our own temporary files and ignored trees are not edits.
            if events.iter().all(|e| {
                e.path
                    .components()
                    .any(|c| c.as_os_str() == ".git" || c.as_os_str() == "node_modules")
            }) {
                continue;
            }
            match cycle(&*t, &store, &ctx.global, app, &dir, Instant::now()) {
                Ok(c) => println!("{}", c.line()),
                Err(e) => eprintln!("cycle failed, still serving the previous version: {e:#}"),
            }
        }
        Ok(())
    }
}

/// Times of one edit-to-served cycle.
#[derive(Debug, Clone, Copy)]
pub struct Cycle {
    pub pack: Duration,
    pub upload: Duration,
    pub patch: Duration,
    /// From the patch until the fetchers published and the app, switched to it, answered.
    pub served: Duration,
    pub total: Duration,
    /// Bytes sent to the store: the app layer when it was new, and a new dependency layer.
    pub uploaded: u64,
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

/// One cycle: package and upload `dir`, make it the wanted release, wait until every pod
/// serves it. `saved` is when the edit happened.
pub fn cycle(
    t: &dyn Target,
    store: &Store,
    global: &Global,
    app: &AppName,
    dir: &Path,
    saved: Instant,
) -> Result<Cycle> {
    let up = super::upload::upload(store, global, app, dir, 3600, false)?;
    let t_patch = Instant::now();
    let published = t.publish(app, &mut |cur| Ok(cur.next(up.digest)))?;
    let served_from = Instant::now();
    if published.is_some() {
        t.wait_served(app, &up.digest, Duration::from_secs(30))?;
    }
    let end = Instant::now();
    Ok(Cycle {
        pack: Duration::from_millis(up.pack_ms),
        upload: Duration::from_millis(up.upload_ms),
        patch: served_from - t_patch,
        served: end - served_from,
        total: end - saved,
        uploaded: if up.uploaded { up.bytes } else { 0 } + up.deps.as_ref().map_or(0, |d| d.bytes),
    })
}
