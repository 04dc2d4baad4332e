//! One save-to-served cycle: package and upload a directory, make it the wanted release
//! (through the cutover when it applies), wait until every pod serves it, and say where the
//! time went. `dev` runs one per save; the bench runs many.

use std::path::Path;
use std::time::{Duration, Instant};

use aether_artifact::store::Store;
use aether_artifact::AppName;
use anyhow::Result;

use crate::config::Global;
use crate::ops::reload::{self, CutoverArgs, Reload, Stage, Trace};
use crate::targets::Target;

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
    /// The upload's number in the control plane's history, when it registered there.
    pub registered: Option<u64>,
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
    let saved_ms = reload::now_ms() - saved.elapsed().as_millis() as u64;
    let up_ms = reload::now_ms();
    let control = t.control()?;
    let up = crate::ops::upload::upload(store, control.as_ref(), global, app, dir, 3600, false)?;
    let t_patch = Instant::now();
    let r = Reload {
        app,
        digest: up.digest,
        marks: vec![
            (Stage::Save, saved_ms),
            (Stage::Debounce, up_ms),
            (Stage::Pack, up_ms + up.pack_ms),
            (Stage::Upload, up_ms + up.pack_ms + up.upload_ms),
        ],
        wait: Some(Duration::from_secs(30)),
    };
    let o = reload::roll(t, r, args, &mut |cur| Ok(cur.next(up.digest)))?;
    let end = Instant::now();
    let trace = o.and_then(|o| o.trace);
    let served = trace
        .as_ref()
        .map(|tr| {
            Duration::from_millis(
                tr.stages
                    .iter()
                    .skip_while(|s| !s.stage.tells_the_pods())
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
            .and_then(|tr| tr.stages.iter().find(|s| s.stage.tells_the_pods()))
            .map_or(end - t_patch, |s| Duration::from_millis(s.ms)),
        served,
        total: trace
            .as_ref()
            .map_or(end - saved, |tr| Duration::from_millis(tr.total_ms)),
        registered: up.registered,
        uploaded: if up.uploaded { up.bytes } else { 0 } + up.deps.as_ref().map_or(0, |d| d.bytes),
        trace,
    })
}
