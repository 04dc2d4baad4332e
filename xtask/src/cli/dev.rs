//! `cargo xtask dev <app> [dir]`: watch mode. Debounced file watching, then package → upload →
//! publish → wait until served, one line per cycle with each stage's time. The same on every
//! target.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aether_artifact::AppName;
use anyhow::{Context, Result};

use super::Ctx;
use crate::ops::cycle::cycle;
use crate::ops::deploy::{deploy, sample_dir};
use crate::ops::reload::{CutoverArgs, Trace};
use crate::targets::DeployOpts;

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
    /// Also serve the live page (as `cargo xtask ui`), showing each cycle's full trace.
    #[arg(long)]
    ui: bool,
    #[command(flatten)]
    ui_args: crate::ops::ui::UiArgs,
}

impl Dev {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let app = &self.app;
        let dir: PathBuf = match &self.dir {
            Some(d) => d.clone(),
            None => sample_dir(&ctx.global)?,
        };
        let t = ctx.target();
        if t.statuses(app)?.is_empty() {
            eprintln!("no running pod of {app}: deploying first");
            let opts = DeployOpts {
                image_import: std::env::var("AETHER_IMAGE_IMPORT").ok(),
                ..Default::default()
            };
            deploy(&*t, &ctx.global, app, &dir, Duration::from_secs(60), &opts)?;
        }
        let page = match self.ui {
            true => {
                let open = ctx.target.opener(ctx.sh, &ctx.global);
                let page =
                    crate::ops::ui::start(open, std::slice::from_ref(app), self.ui_args.ui_port)?;
                println!("ui: {}", page.url);
                Some(page)
            }
            false => None,
        };
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
            let c = cycle(&*t, &store, &ctx.global, app, &dir, saved, &self.cutover);
            if let (Some(page), Ok(Some(tr))) = (&page, c.as_ref().map(|c| c.trace.as_ref())) {
                page.hub
                    .send("reload", crate::ops::ui::reload_event(app, "dev", tr));
            }
            match c {
                Ok(c) if self.json => println!("{}", serde_json::to_string(&c.trace)?),
                Ok(c) => println!(
                    "{}{}",
                    c.trace
                        .as_ref()
                        .map(Trace::line)
                        .unwrap_or_else(|| c.line()),
                    c.registered
                        .map(|n| format!(" | release #{n}"))
                        .unwrap_or_default()
                ),
                Err(e) => eprintln!("cycle failed, still serving the previous version: {e:#}"),
            }
        }
        Ok(())
    }
}
