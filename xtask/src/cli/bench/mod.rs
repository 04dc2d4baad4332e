//! `cargo xtask bench`: figures, not assertions. Every measurement is paired with a baseline
//! taken in the same run on the same tree, and the ratio is what to compare across machines.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aether_artifact::unpack::{unpack_verified, Limits};
use anyhow::{Context, Result};
use xshell::{cmd, Shell};

mod control_urls;
mod cutover;
mod edit;
mod hot_patch_on_cluster;
mod platform_on_cluster;
mod see;
mod supervisor;
mod tree;

use edit::*;
use hot_patch_on_cluster::*;
pub use tree::generate_tree;

/// Print packing and unpacking figures next to tar+gzip, and edit-to-served times, on the same
/// machine; with --cluster, hot-patch to served on a real cluster.
#[derive(clap::Args)]
pub struct Bench {
    /// Files in the generated node_modules-like tree.
    #[arg(long, default_value_t = 7000)]
    files: usize,
    /// Repetitions of each measurement (the minimum is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Edit-to-served cycles on the local target (0 skips it).
    #[arg(long, default_value_t = 20)]
    cycles: usize,
    /// Instead: hot-patch → served on the cluster KUBECONFIG names (10 cycles).
    #[arg(long)]
    cluster: bool,
    /// Only the control plane's figures (also part of the full run).
    #[arg(long)]
    control: bool,
    /// Only the live page's and `debug`'s figures (also part of the full run).
    #[arg(long)]
    see: bool,
}

impl Bench {
    pub fn run(self, ctx: &super::Ctx) -> Result<()> {
        if self.cluster {
            cluster(ctx.sh, 10)?;
            platform_on_cluster::platform(ctx.sh, 10)
        } else if self.see {
            release_fetcher(ctx.sh)?;
            let work = tempfile::Builder::new().prefix("aether-bench-").tempdir()?;
            see::run(ctx.sh, work.path(), self.cycles)
        } else if self.control {
            let work = tempfile::Builder::new().prefix("aether-bench-").tempdir()?;
            control_urls::run(ctx.sh, work.path())
        } else {
            run(ctx.sh, self.files, self.runs, self.cycles)
        }
    }
}

fn run(sh: &Shell, files: usize, runs: usize, cycles: usize) -> Result<()> {
    release_fetcher(sh)?;
    let work = tempfile::Builder::new().prefix("aether-bench-").tempdir()?;
    let tree = work.path().join("tree");
    let (n, bytes) = generate_tree(&tree, files)?;
    println!(
        "tree: {n} files, {:.1} MB of content (node_modules-like), {} runs each, minimum reported",
        bytes as f64 / 1e6,
        runs
    );
    let runs = runs.max(1);

    let ours_tgz = work.path().join("ours.tar.gz");
    let mut packed = None;
    let ours = min_time(runs, || {
        packed = Some(crate::ops::packing::pack_to_file(&tree, &ours_tgz)?);
        Ok(())
    })?;
    let packed = packed.expect("ran at least once");

    let base_tgz = work.path().join("base.tar.gz");
    let base = min_time(runs, || {
        tar_gzip(&tree, &base_tgz)?;
        Ok(cmd!(sh, "sha256sum {base_tgz}")
            .quiet()
            .ignore_stdout()
            .run()?)
    })?;
    let base_size = fs::metadata(&base_tgz)?.len();

    println!();
    println!("{:<44} {:>8} {:>10}", "pack", "min s", "MB out");
    println!(
        "{:<44} {:>8.3} {:>10.1}",
        "aether pack (deterministic, sha256 inline)",
        secs(ours),
        packed.bytes as f64 / 1e6
    );
    println!(
        "{:<44} {:>8.3} {:>10.1}",
        "tar -cf - . | gzip -6 ; sha256sum",
        secs(base),
        base_size as f64 / 1e6
    );
    println!(
        "pack ratio (aether / tar|gzip): {:.2}  (target 0.35 or better)",
        secs(ours) / secs(base)
    );

    // Fresh directories for every extraction: re-using names right after deleting a similar
    // tree makes file creation several times slower on ext4.
    let mut k = 0;
    let mut fresh = || {
        k += 1;
        work.path().join(format!("x{k}"))
    };
    // Durable and not durable, interleaved, each from a flushed page cache: otherwise the
    // writeback a non-durable run leaves behind is paid by whichever run comes next.
    let unpack = |dest: PathBuf, durable: bool| -> Result<Duration> {
        // SAFETY: sync() takes no arguments and cannot fail.
        unsafe { libc::sync() };
        let t = Instant::now();
        unpack_verified(
            fs::File::open(&ours_tgz)?,
            &packed.digest,
            &dest,
            &Limits {
                durable,
                ..Limits::default()
            },
        )?;
        Ok(t.elapsed())
    };
    let (mut ours_x, mut nondurable_x) = (Duration::MAX, Duration::MAX);
    for _ in 0..runs {
        ours_x = ours_x.min(unpack(fresh(), true)?);
        nondurable_x = nondurable_x.min(unpack(fresh(), false)?);
    }
    // SAFETY: as above.
    unsafe { libc::sync() };
    let base_x = min_time(runs, || {
        let dest: PathBuf = fresh();
        fs::create_dir(&dest)?;
        Ok(cmd!(sh, "tar -xzf {base_tgz} -C {dest}").quiet().run()?)
    })?;
    println!();
    println!("{:<44} {:>8}", "unpack", "min s");
    println!(
        "{:<44} {:>8.3}",
        "aether verified unpack (hash + extract)",
        secs(ours_x)
    );
    println!(
        "{:<44} {:>8.3}",
        "  the same without syncfs (not durable)",
        secs(nondurable_x)
    );
    println!("{:<44} {:>8.3}", "tar -xzf", secs(base_x));
    println!(
        "durability cost (syncfs before the rename): {:+.1}%  (target at most +10%)",
        (secs(ours_x) / secs(nondurable_x) - 1.0) * 100.0
    );
    println!(
        "unpack ratio (aether / tar -xzf): {:.2}",
        secs(ours_x) / secs(base_x)
    );
    if cycles > 0 {
        supervisor::run(sh, work.path(), 10)?;
        edit_to_served(sh, work.path(), cycles)?;
        with_node_modules(sh, work.path(), &tree, cycles, ours, packed.bytes)?;
        see::run(sh, work.path(), cycles)?;
    }
    control_urls::run(sh, work.path())?;
    Ok(())
}

/// The stdout of an xtask run that must have succeeded.
fn succeeded(args: &[&str], out: std::process::Output) -> Result<String> {
    anyhow::ensure!(
        out.status.success(),
        "xtask {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The baseline `tar -cf - . | gzip -6 > out`, as two processes joined by a pipe (no shell).
fn tar_gzip(tree: &Path, out: &Path) -> Result<()> {
    use std::process::{Command, Stdio};
    let mut tar = Command::new("tar")
        .args(["-cf", "-", "."])
        .current_dir(tree)
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let gz = Command::new("gzip")
        .arg("-6")
        .stdin(tar.stdout.take().expect("piped"))
        .stdout(fs::File::create(out)?)
        .status()
        .context("running gzip")?;
    anyhow::ensure!(tar.wait()?.success() && gz.success(), "tar | gzip failed");
    Ok(())
}

/// The fetcher (and aether-run) as pods run it: an optimised build, not the debug one the
/// local target builds for itself.
fn release_fetcher(sh: &Shell) -> Result<()> {
    if std::env::var_os("AETHER_FETCHER_BIN").is_none() {
        let bin = crate::targets::local::build_fetcher(sh, true)?;
        std::env::set_var("AETHER_FETCHER_BIN", bin);
    }
    Ok(())
}

use aether_artifact::unix_now_ms as now_ms;

/// "p50 X ms, p95 Y ms" (nearest rank) of ascending durations.
fn p50_p95(sorted: &[Duration]) -> String {
    let pct = |p: f64| secs(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]) * 1000.0;
    format!("p50 {:.0} ms, p95 {:.0} ms", pct(0.5), pct(0.95))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn min_time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed());
    }
    Ok(best)
}
