//! Edit-to-served on the local target: the sample edited and served cycle after cycle, and
//! the same with a large `node_modules` (only the app layer travels).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use xshell::{cmd, Shell};

use super::*;

/// Edit-to-served on the local target: a one-line edit, then the same cycle `dev` runs, until
/// the first HTTP response from the new release (aether-run switches once the new node
/// listens). The floor is a node start.
pub(super) fn edit_to_served(sh: &Shell, work: &Path, cycles: usize) -> Result<()> {
    let (global, local, app, dir) = local_sample(sh, work, "bench")?;
    let store = local.store()?;
    let result = edit_cycles(&*local, &store, &global, &app, &dir, cycles);
    local.down(&app)?;
    let mut cs = result?;
    let node_floor = min_time(5, || Ok(cmd!(sh, "node -e 0").quiet().run()?))?;
    cs.sort_by_key(|c| c.total);
    let totals: Vec<Duration> = cs.iter().map(|c| c.total).collect();
    let sum = |f: fn(&crate::ops::cycle::Cycle) -> Duration| {
        cs.iter().map(f).sum::<Duration>().as_secs_f64()
    };
    let all = sum(|c| c.total);
    println!();
    println!(
        "edit-to-served, local target, {} cycles of a one-line edit, {:?} apart",
        cs.len(),
        supervisor::PAUSE
    );
    println!(
        "  {} (goal: p50 ≤ 150 ms; tools people use: 1-3 s)",
        p50_p95(&totals)
    );
    println!(
        "  share: pack {:.0}%, upload {:.0}%, patch {:.0}%, fetch+start beside+switch+first response {:.0}%",
        100.0 * sum(|c| c.pack) / all,
        100.0 * sum(|c| c.upload) / all,
        100.0 * sum(|c| c.patch) / all,
        100.0 * sum(|c| c.served) / all
    );
    println!(
        "  floor in the same run: `node -e 0` {:.0} ms",
        secs(node_floor) * 1000.0
    );
    Ok(())
}

/// `cycles` one-line edits of the sample's VERSION in `dir`, each through the cycle `dev` runs,
/// a developer's pause apart.
pub(super) fn edit_cycles(
    local: &dyn crate::targets::Target,
    store: &aether_artifact::store::Store,
    global: &crate::config::Global,
    app: &aether_artifact::AppName,
    dir: &Path,
    cycles: usize,
) -> Result<Vec<crate::ops::cycle::Cycle>> {
    let src = dir.join("server.js");
    let original = fs::read_to_string(&src)?;
    let mut out = Vec::new();
    for i in 0..cycles {
        fs::write(
            &src,
            original.replace(
                "const VERSION = 'v1'",
                &format!("const VERSION = 'bench-{i}'"),
            ),
        )?;
        out.push(crate::ops::cycle::cycle(
            local,
            store,
            global,
            app,
            dir,
            Instant::now(),
            &Default::default(),
        )?);
        std::thread::sleep(supervisor::PAUSE);
    }
    Ok(out)
}

/// A one-line edit in an app whose `node_modules` is the generated tree: what one edit uploads
/// and how soon it is served, against re-packing the whole tree (measured above) per edit.
pub(super) fn with_node_modules(
    sh: &Shell,
    work: &Path,
    tree: &Path,
    cycles: usize,
    whole_pack: Duration,
    whole_bytes: u64,
) -> Result<()> {
    use crate::config::Global;
    use crate::targets::DeployOpts;
    use aether_artifact::AppName;
    let global = Global {
        project_dir: Some(work.join("project-deps")),
        ..Default::default()
    };
    let app = AppName::parse("bench-deps")?;
    let dir = work.join("project-deps/app");
    crate::ops::sample::ensure(&dir)?;
    fs::write(dir.join("package-lock.json"), "{\"lockfileVersion\": 3}\n")?;
    fs::rename(tree, dir.join(aether_artifact::app::DEPS_DIR))?;
    let local = local_target(sh, &global);
    let t0 = Instant::now();
    crate::ops::deploy::deploy(
        &*local,
        &global,
        &app,
        &dir,
        Duration::from_secs(120),
        &DeployOpts::default(),
    )?;
    let first = t0.elapsed();
    let store = local.store()?;
    let result = edit_cycles(&*local, &store, &global, &app, &dir, cycles);
    local.down(&app)?;
    let mut cs = result?;
    cs.sort_by_key(|c| c.total);
    let totals: Vec<Duration> = cs.iter().map(|c| c.total).collect();
    let mut up: Vec<u64> = cs.iter().map(|c| c.uploaded).collect();
    up.sort();
    println!();
    println!(
        "one-line edits in an app with the tree above as node_modules, local target, {} cycles",
        cs.len()
    );
    println!(
        "  uploaded per edit: p50 {}, max {} (goal ≤ 64 KiB); re-packing the whole app would upload {} and pack for {:.2} s per edit",
        crate::ops::packing::human_bytes(up[up.len() / 2]),
        crate::ops::packing::human_bytes(*up.last().unwrap_or(&0)),
        crate::ops::packing::human_bytes(whole_bytes),
        secs(whole_pack)
    );
    println!("  save → served: {} (goal p50 ≤ 0.5 s)", p50_p95(&totals));
    println!(
        "  first deploy (node_modules packed and uploaded once, fetched once): {:.2} s",
        secs(first)
    );
    Ok(())
}

/// The local target with the bench's own project, whatever the user's default target is.
/// The sample deployed as `app` on the local target, in a project under `work`: the project's
/// settings, the target, the app and the sample's directory.
pub(super) fn local_sample<'a>(
    sh: &'a Shell,
    work: &Path,
    app: &str,
) -> Result<(
    crate::config::Global,
    Box<dyn crate::targets::Target + 'a>,
    aether_artifact::AppName,
    std::path::PathBuf,
)> {
    let global = crate::config::Global {
        project_dir: Some(work.join("project")),
        ..Default::default()
    };
    let name = aether_artifact::AppName::parse(app)?;
    let dir = work.join("project").join(app);
    crate::ops::sample::ensure(&dir)?;
    let local = local_target(sh, &global);
    crate::ops::deploy::deploy(
        &*local,
        &global,
        &name,
        &dir,
        Duration::from_secs(60),
        &Default::default(),
    )?;
    Ok((global, local, name, dir))
}

pub(super) fn local_target<'a>(
    sh: &'a xshell::Shell,
    global: &crate::config::Global,
) -> Box<dyn crate::targets::Target + 'a> {
    let args = crate::targets::TargetArgs {
        target: Some(crate::targets::Kind::Local),
        context: None,
        namespace: crate::manifests::NAMESPACE.into(),
    };
    args.open_kind(sh, global, crate::targets::Kind::Local)
}
