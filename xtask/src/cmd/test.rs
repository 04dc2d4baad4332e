//! `cargo xtask test`: installs what the tests need on a fresh machine, then runs every test.
//! CI's `.ci/run` calls exactly this, so a missing install step fails CI rather than hiding
//! behind something a developer installed by hand.

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
    /// Passed on to `cargo test`.
    #[arg(last = true)]
    extra: Vec<String>,
}

impl Test {
    pub fn run(self, ctx: &super::Ctx) -> Result<()> {
        run(ctx.sh, self.no_install, self.cluster, &self.extra)
    }
}

fn run(sh: &Shell, no_install: bool, cluster: bool, extra: &[String]) -> Result<()> {
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
    if cluster {
        return run_cluster(sh, extra);
    }
    cmd!(sh, "cargo test --workspace --locked {extra...}").run()?;
    Ok(())
}

/// The real-cluster suite (`xtask/tests/kube.rs`) against the cluster `KUBECONFIG` names. The
/// fetcher image is built first; with `../shared/k8s-local` beside the project its
/// `import-image` loads it (users of kind or minikube set `AETHER_IMAGE_IMPORT` themselves;
/// MicroK8s imports on its own with `AETHER_TEST_TARGET=microk8s`).
fn run_cluster(sh: &Shell, extra: &[String]) -> Result<()> {
    if !has(sh, "kubectl") {
        bail!("kubectl is not installed: the cluster suite drives a real cluster through it");
    }
    cmd!(sh, "kubectl get nodes")
        .quiet()
        .ignore_stdout()
        .run()
        .context("no reachable cluster: start one (`../shared/k8s-local/up`, `microk8s start`) and set KUBECONFIG")?;
    crate::image::run(sh, None)?;
    let shared = crate::project_root().join("../shared/k8s-local/import-image");
    let _import =
        (std::env::var_os("AETHER_IMAGE_IMPORT").is_none() && shared.exists()).then(|| {
            sh.push_env(
                "AETHER_IMAGE_IMPORT",
                format!("{} {{archive}}", shared.display()),
            )
        });
    cmd!(
        sh,
        "cargo test --locked -p xtask --test kube {extra...} -- --ignored --test-threads=1"
    )
    .run()?;
    Ok(())
}

/// Whether `tool` is an executable file in a directory of PATH.
fn has(_sh: &Shell, tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
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
