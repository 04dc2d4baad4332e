//! `cargo xtask bench`: figures, not assertions. Every measurement is paired with a baseline
//! taken in the same run on the same tree, and the ratio is what to compare across machines.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aether_artifact::unpack::{unpack_verified, Limits};
use anyhow::{Context, Result};
use xshell::{cmd, Shell};

mod cutover;
mod supervisor;

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
}

impl Bench {
    pub fn run(self, ctx: &super::Ctx) -> Result<()> {
        if self.cluster {
            cluster(ctx.sh, 10)
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
    }
    Ok(())
}

/// Edit-to-served on the local target: a one-line edit, then the same cycle `dev` runs, until
/// the first HTTP response from the new release (aether-run switches once the new node
/// listens). The floor is a node start.
fn edit_to_served(sh: &Shell, work: &Path, cycles: usize) -> Result<()> {
    use crate::config::Global;
    use crate::targets::DeployOpts;
    use aether_artifact::AppName;
    let global = Global {
        project_dir: Some(work.join("project")),
        ..Default::default()
    };
    let app = AppName::parse("bench")?;
    let dir = work.join("project/app");
    crate::ops::sample::ensure(&dir)?;
    let local = local_target(sh, &global);
    crate::ops::deploy::deploy(
        &*local,
        &global,
        &app,
        &dir,
        Duration::from_secs(60),
        &DeployOpts::default(),
    )?;
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
fn edit_cycles(
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
fn with_node_modules(
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

/// `bench --cluster`: hot-patch → new version served on the cluster `KUBECONFIG` names, timed
/// from the start of the `hot-patch` command as a user runs it, split by the fetcher's own
/// timestamps into kubectl calls, the kubelet's volume refresh, fetch + swap, aether-run's
/// switch, and the client seeing it.
fn cluster(sh: &Shell, cycles: usize) -> Result<()> {
    let work = tempfile::Builder::new().prefix("aether-bench-").tempdir()?;
    let project = work.path().join("project");
    let dir = project.join("app");
    crate::ops::sample::ensure(&dir)?;
    let ns = format!("aether-bench-{}", std::process::id());
    let exe = std::env::current_exe()?;
    let run_x = |args: &[&str]| -> Result<std::process::Output> {
        Ok(std::process::Command::new(&exe)
            .args(args)
            .env("AETHER_PROJECT_DIR", &project)
            .env("AETHER_NAMESPACE", &ns)
            .env(
                "AETHER_TARGET",
                std::env::var("AETHER_TARGET").unwrap_or_else(|_| "kube".into()),
            )
            .env_remove(aether_artifact::store::ENV_ENDPOINT)
            .output()?)
    };
    let x = |args: &[&str]| succeeded(args, run_x(args)?);
    let last = |out: &str, key: &str| -> Result<String> {
        out.lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(String::from)
            .with_context(|| format!("no {key}= in {out}"))
    };
    let result = (|| -> Result<Vec<[Duration; 6]>> {
        let d = x(&["deploy-sample", "demo", dir.to_str().unwrap()])?;
        let url = last(&d, "url")?;
        let mut out = Vec::new();
        let src = dir.join("server.js");
        let text = fs::read_to_string(&src)?;
        for i in 0..cycles {
            let version = format!("bench-{i}");
            fs::write(&src, text.replace("'v1'", &format!("'{version}'")))?;
            let digest = last(
                &x(&["hot-upload", "demo", dir.to_str().unwrap()])?,
                "digest",
            )?;
            let t0_ms = now_ms();
            let t0 = Instant::now();
            x(&["hot-patch", "demo", &digest])?;
            let cmd = t0.elapsed();
            loop {
                let body = attohttpc::get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .ok()
                    .and_then(|r| r.text().ok());
                if body.is_some_and(|b| b.contains(&version)) {
                    break;
                }
                anyhow::ensure!(
                    t0.elapsed() < Duration::from_secs(30),
                    "cycle {i}: not served within 30 s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let total = t0.elapsed();
            let jsonpath = "jsonpath={.items[0].metadata.name}";
            let fetcher = aether_artifact::FetcherEnv::BIN_IN_IMAGE;
            let pods = cmd!(
                sh,
                "kubectl -n {ns} get pods -l aether.dev/app=demo -o {jsonpath}"
            )
            .quiet()
            .read()?;
            let st: serde_json::Value = serde_json::from_str(
                &cmd!(
                    sh,
                    "kubectl -n {ns} exec {pods} -c aether-fetcher -- {fetcher} status"
                )
                .quiet()
                .read()?,
            )?;
            let ms = |k: &str| st[k].as_u64().unwrap_or(t0_ms);
            let (seen, published) = (ms("seen_at_ms"), ms("published_at_ms"));
            let switched = st["runner"]["switched_at_ms"].as_u64().unwrap_or(published);
            let span = |a: u64, b: u64| Duration::from_millis(b.saturating_sub(a));
            let cmd_end = t0_ms + cmd.as_millis() as u64;
            out.push([
                total,
                cmd,
                span(cmd_end, seen),
                span(seen, published),
                span(published, switched),
                total.saturating_sub(span(t0_ms, switched)),
            ]);
        }
        Ok(out)
    })();
    let cut = result
        .is_ok()
        .then(|| cutover::measure(&run_x, &dir, &project, &ns, cycles));
    let _ = x(&["down", "demo"]);
    let _ = cmd!(sh, "kubectl delete namespace {ns} --wait=false")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run();
    if let Ok(b) = fs::read(project.join(".aether/local/store.json")) {
        let st: serde_json::Value = serde_json::from_slice(&b)?;
        if let Some(pid) = st["pid"].as_u64() {
            let _ = crate::proc::kill_group(pid as u32);
        }
    }
    let mut cs = result?;
    let kubectl_floor = min_time(5, || {
        Ok(cmd!(sh, "kubectl -n {ns} get configmaps -o name")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()?)
    })?;
    cs.sort_by_key(|c| c[0]);
    let totals: Vec<Duration> = cs.iter().map(|c| c[0]).collect();
    let all: f64 = cs.iter().map(|c| c[0].as_secs_f64()).sum();
    let share = |i: usize| 100.0 * cs.iter().map(|c| c[i].as_secs_f64()).sum::<f64>() / all;
    println!(
        "hot-patch → new version served, real cluster, {} cycles",
        cs.len()
    );
    println!(
        "  {} from the start of `hot-patch` (target p50 ≤ 800 ms)",
        p50_p95(&totals)
    );
    println!(
        "  share: hot-patch command (kubectl calls) {:.0}%, kubelet volume refresh {:.0}%, fetch+verify+swap {:.0}%, aether-run start beside+switch {:.0}%, first response seen {:.0}%",
        share(1),
        share(2),
        share(3),
        share(4),
        share(5)
    );
    println!(
        "  floor in the same run: one `kubectl get` {:.0} ms",
        secs(kubectl_floor) * 1000.0
    );
    if let Some(cut) = cut {
        cut?.print();
    }
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

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

/// A tree shaped like node_modules: packages of many small JS-like text files (which compress
/// about 4:1, like real JS), a few large bundles, package.json files, some nesting.
pub fn generate_tree(root: &Path, files: usize) -> Result<(usize, u64)> {
    const WORDS: &[&str] = &[
        "function",
        "return",
        "const",
        "let",
        "var",
        "if",
        "else",
        "for",
        "while",
        "require",
        "module",
        "exports",
        "this",
        "new",
        "typeof",
        "undefined",
        "null",
        "true",
        "false",
        "async",
        "await",
        "Promise",
        "resolve",
        "reject",
        "callback",
        "options",
        "value",
        "key",
        "index",
        "length",
        "prototype",
        "Object",
        "Array",
        "String",
        "Error",
        "throw",
        "catch",
        "try",
        "buffer",
        "stream",
        "=",
        "==",
        "===",
        "(",
        ")",
        "{",
        "}",
        ";",
        ",",
        ".",
        "=>",
        "+",
        "-",
        "&&",
        "||",
        "!",
        "[",
        "]",
    ];
    let mut seed: u64 = 0x2545F4914F6CDD1D;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut total = 0u64;
    let mut made = 0usize;
    let mut pkg = 0usize;
    while made < files {
        let dir = root
            .join(format!("pkg-{pkg:04}"))
            .join(if pkg.is_multiple_of(3) {
                "lib/internal"
            } else {
                "lib"
            });
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(
            root.join(format!("pkg-{pkg:04}/package.json")),
            format!(
                "{{\"name\":\"pkg-{pkg}\",\"version\":\"1.{pkg}.0\",\"main\":\"lib/index.js\"}}\n"
            ),
        )?;
        made += 1;
        let per_pkg = 10 + (rnd() % 20) as usize;
        for i in 0..per_pkg.min(files.saturating_sub(made)) {
            // Mostly 1-16 KB; about 1 in 140 files is a 300-900 KB bundle.
            let size = if rnd() % 140 == 0 {
                300_000 + rnd() % 600_000
            } else {
                1_000 + rnd() % 13_000
            } as usize;
            let mut s = String::with_capacity(size + 64);
            while s.len() < size {
                let w = WORDS[(rnd() % WORDS.len() as u64) as usize];
                s.push_str(w);
                if rnd() % 9 == 0 {
                    s.push_str(&format!("_{}", rnd() % 5000));
                }
                s.push(if rnd() % 12 == 0 { '\n' } else { ' ' });
            }
            total += s.len() as u64;
            fs::write(dir.join(format!("m{i}.js")), s)?;
            made += 1;
        }
        pkg += 1;
    }
    Ok((made, total))
}

/// The local target with the bench's own project, whatever the user's default target is.
fn local_target<'a>(
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
