//! `cargo xtask test`: installs what the tests need on a fresh machine, then runs every test.
//! CI's `.ci/run` calls exactly this, so a missing install step fails CI rather than hiding
//! behind something a developer installed by hand. `--repeat` and `--under-load` run the suite
//! the way a busy CI machine does, so a test that reads state before it is there fails here
//! first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// Tools the tests run, and the Debian package that provides each.
const TOOLS: &[(&str, &str)] = &[
    ("node", "nodejs"),
    ("npm", "npm"),
    ("curl", "curl"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("runc", "runc"),
    ("script", "bsdutils"),
    ("minisign", "minisign"),
    ("git", "git"),
    ("jq", "jq"),
    ("socat", "socat"),
    // A real Postgres for the sample's database check, and the image built from its package.
    ("/usr/lib/postgresql", "postgresql"),
    // The live page is tested in a real headless browser; a font so its screenshot has text.
    ("chromium", "chromium"),
    ("/usr/share/fonts/truetype/dejavu", "fonts-dejavu-core"),
];

/// Install what the tests need (apt, when missing) and run every test in the workspace.
#[derive(clap::Args)]
pub struct Test {
    /// Do not install anything; tests that need a missing tool say so.
    #[arg(long)]
    no_install: bool,
    /// Run the real-cluster suite instead, against the cluster KUBECONFIG names.
    #[arg(long)]
    cluster: bool,
    /// Run the suite this many times in a row, stopping at the first failure.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Keep every core busy with a CPU hog while the tests run (the build runs first, without
    /// them), as a loaded CI machine would.
    #[arg(long)]
    under_load: bool,
    /// Passed on to `cargo test`.
    #[arg(last = true)]
    extra: Vec<String>,
}

impl Test {
    pub fn run(self, ctx: &super::Ctx) -> Result<()> {
        run(ctx.sh, &self)
    }
}

fn run(sh: &Shell, t: &Test) -> Result<()> {
    let (no_install, cluster, extra) = (t.no_install, t.cluster, &t.extra);
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(t, _)| !has(sh, t))
        .map(|(_, p)| *p)
        .collect();
    if !missing.is_empty() {
        if no_install {
            eprintln!(
                "missing test tools (their tests will say so): {}",
                missing.join(" ")
            );
        } else {
            install(sh, &missing)?;
        }
    }
    let _relay = if cluster {
        Some(crate::k8s_local::ApiRelay::start()?)
    } else {
        None
    };
    let suite = if cluster {
        cluster_suite(sh, extra)?
    } else {
        let suite = cmd!(sh, "cargo test --workspace --locked {extra...}");
        // The local target's tests run the fetcher this same build makes (aether-fetcher's
        // own tests need its binary), unless the run is narrowed to some packages: building
        // it alone (`cargo build -p aether-fetcher`) unifies dependency features differently
        // and rebuilt 46 crates, minutes on CI.
        let narrowed = extra
            .iter()
            .any(|a| a == "-p" || a.starts_with("--package") || a.starts_with("--exclude"));
        if narrowed {
            suite
        } else {
            suite.env(
                "AETHER_FETCHER_BIN",
                crate::target_dir().join("debug/aether-fetcher"),
            )
        }
    };
    if t.repeat == 1 && !t.under_load {
        suite.run()?;
        return Ok(());
    }
    // Build first, unloaded: the hogs are there for the tests, not the compiler.
    let build_args = extra.split(|a| a == "--").next().unwrap_or_default();
    let build = if cluster {
        cmd!(
            sh,
            "cargo test --locked -p xtask --test kube --no-run {build_args...}"
        )
    } else {
        cmd!(
            sh,
            "cargo test --workspace --locked --no-run {build_args...}"
        )
    };
    build.run()?;
    let _hogs = t.under_load.then(Hogs::start);
    let mut times = Vec::new();
    for i in 1..=t.repeat {
        let t0 = Instant::now();
        let r = suite.run();
        let took = t0.elapsed().as_secs_f64();
        if let Err(e) = r {
            bail!(
                "run {i} of {} failed after {took:.0} s{}: {e}",
                t.repeat,
                if t.under_load { " under load" } else { "" }
            );
        }
        times.push(format!("{took:.0} s"));
        eprintln!("test run {i} of {} passed in {took:.0} s", t.repeat);
    }
    eprintln!(
        "{} run(s) passed{}: {}",
        t.repeat,
        if t.under_load { " under load" } else { "" },
        times.join(", ")
    );
    Ok(())
}

/// One busy thread per core for as long as it lives: the load a shared CI runner puts beside
/// the tests (what `stress-ng --cpu N` does, without installing it).
struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    fn start() -> Hogs {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        eprintln!("under load: {n} CPU hog(s), one per core, beside the tests");
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The real-cluster suite (`xtask/tests/kube/`) against the cluster `KUBECONFIG` names. The
/// fetcher image is built first; with `../shared/k8s-local` beside the project its
/// `import-image` loads it (users of kind or minikube set `AETHER_IMAGE_IMPORT` themselves;
/// MicroK8s imports on its own with `AETHER_TEST_TARGET=microk8s`).
fn cluster_suite<'a>(sh: &'a Shell, extra: &[String]) -> Result<xshell::Cmd<'a>> {
    if !has(sh, "kubectl") {
        bail!("kubectl is not installed: the cluster suite drives a real cluster through it");
    }
    cmd!(sh, "kubectl get nodes")
        .quiet()
        .ignore_stdout()
        .run()
        .context("no reachable cluster: start one (`../shared/k8s-local/up`, `microk8s start`) and set KUBECONFIG")?;
    crate::images::fetcher::run(sh, None)?;
    crate::images::store_server::run(sh, None)?;
    crate::images::control::run(sh, None)?;
    // No registry to pull postgres:* from: bootstrap's test runs the one built from this
    // machine's Debian package, loaded into the nodes by the test itself.
    let pg = crate::images::postgres::run(sh, None)?;
    let shared = crate::project_root().join("../shared/k8s-local/import-image");
    let mut suite = cmd!(
        sh,
        "cargo test --locked -p xtask --test kube {extra...} -- --ignored --test-threads=1"
    )
    .env("AETHER_TEST_POSTGRES_ARCHIVE", &pg.archive)
    .env("AETHER_POSTGRES_IMAGE", &pg.reference);
    if std::env::var_os("AETHER_IMAGE_IMPORT").is_none() && shared.exists() {
        suite = suite.env(
            "AETHER_IMAGE_IMPORT",
            format!("{} {{archive}}", shared.display()),
        );
    }
    Ok(suite)
}

/// Whether `tool` is an executable file in a directory of PATH.
fn has(_sh: &Shell, tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if tool.starts_with('/') {
        return std::path::Path::new(tool).exists();
    }
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn install(sh: &Shell, pkgs: &[&str]) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !has(sh, "apt-get") {
        bail!("missing: {}; install them with your package manager, or run `cargo xtask test --no-install`", pkgs.join(" "));
    }
    eprintln!("installing test tools: {}", pkgs.join(" "));
    let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    if root {
        cmd!(sh, "apt-get update -qq").run()?;
        cmd!(
            sh,
            "apt-get install -y -qq --no-install-recommends {pkgs...}"
        )
        .run()?;
    } else {
        cmd!(sh, "sudo apt-get update -qq").run()?;
        cmd!(
            sh,
            "sudo apt-get install -y -qq --no-install-recommends {pkgs...}"
        )
        .run()?;
    }
    Ok(())
}
