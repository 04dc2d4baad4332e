//! `cargo xtask dev <app> [dir]`: watch mode. Debounced file watching, then package → upload →
//! patch → wait until served, one line per cycle with each stage's time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aether_artifact::store::Store;
use aether_artifact::AppName;
use anyhow::{Context, Result};
use xshell::Shell;

use crate::cluster::Cluster;
use crate::config::Global;
use crate::local::Local;
use crate::target::{Target, TargetArgs};

pub fn run(
    sh: &Shell,
    global: &Global,
    target: &TargetArgs,
    app: &AppName,
    dir: Option<&Path>,
    debounce: Duration,
) -> Result<()> {
    let t = target.resolve(sh);
    let dir: PathBuf = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| global.project_dir().join("examples/sample-node"));
    let local = Local::new(global);
    let cluster = (t != Target::Local).then(|| Cluster::new(sh, global, target, t));
    if cluster.is_none() && local.pod(app).is_none() {
        eprintln!("no local pod of {app}: deploying first");
        crate::deploy::run(
            sh,
            global,
            target,
            app,
            Some(&dir),
            Duration::from_secs(60),
            None,
        )?;
    }
    let store = match &cluster {
        Some(c) => c.store()?,
        None => local.store()?,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let mut debouncer =
        notify_debouncer_mini::new_debouncer(debounce, tx).context("starting the file watcher")?;
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
        let saved = Instant::now();
        let result = match &cluster {
            // On a cluster the cycle ends when the pods are signalled; `hot-status` shows the rest.
            Some(c) => {
                crate::upload::upload(&store, global, app, &dir, 3600, false).and_then(|up| {
                    c.hot_patch(app, up.digest, None)?;
                    Ok(format!(
                        "pack {} ms | upload {} ms | save to signalled {} ms",
                        up.pack_ms,
                        up.upload_ms,
                        saved.elapsed().as_millis()
                    ))
                })
            }
            None => cycle(&local, &store, global, app, &dir, saved).map(|c| c.line()),
        };
        match result {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cycle failed, still serving the previous version: {e:#}"),
        }
    }
    Ok(())
}

/// Times of one edit-to-served cycle.
#[derive(Debug, Clone, Copy)]
pub struct Cycle {
    pub pack: Duration,
    pub upload: Duration,
    pub patch: Duration,
    /// From the patch until the fetcher published and the restarted app answered.
    pub served: Duration,
    pub total: Duration,
}

impl Cycle {
    pub fn line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "pack {:.0} ms | upload {:.0} ms | patch {:.0} ms | fetch+restart+first response {:.0} ms | save to served {:.0} ms",
            ms(self.pack),
            ms(self.upload),
            ms(self.patch),
            ms(self.served),
            ms(self.total)
        )
    }
}

/// One cycle: package and upload `dir`, make it the wanted release, wait for the first HTTP
/// response from the restarted app. `saved` is when the edit happened.
pub fn cycle(
    local: &Local,
    store: &Store,
    global: &Global,
    app: &AppName,
    dir: &Path,
    saved: Instant,
) -> Result<Cycle> {
    let up = crate::upload::upload(store, global, app, dir, 3600, false)?;
    let t_patch = Instant::now();
    let current = local.release(app)?;
    let before = local.app_pids(app);
    let served_from = match current.next(up.digest) {
        Some(next) => {
            local.set_release(app, &next)?;
            Instant::now()
        }
        None => Instant::now(),
    };
    let patch = served_from - t_patch;
    if current.digest != Some(up.digest) {
        local.wait_served(app, &up.digest, &before, Duration::from_secs(30))?;
    }
    let end = Instant::now();
    Ok(Cycle {
        pack: Duration::from_millis(up.pack_ms),
        upload: Duration::from_millis(up.upload_ms),
        patch,
        served: end - served_from,
        total: end - saved,
    })
}
