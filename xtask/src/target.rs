//! Where apps run: `microk8s`, `kube` (any kubeconfig context) or `local` (processes on this
//! machine). Every command that touches a running app takes `--target` / `AETHER_TARGET`.

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Microk8s,
    Kube,
    Local,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct TargetArgs {
    /// Where the app runs [default: microk8s when installed and running, else local]
    #[arg(long, global = true, env = "AETHER_TARGET", value_enum)]
    pub target: Option<Target>,
}

impl TargetArgs {
    /// The chosen target, printed so a user always knows where a command went.
    pub fn resolve(&self, sh: &Shell) -> Target {
        let (t, why) = match self.target {
            Some(t) => (t, "chosen"),
            None if microk8s_running(sh) => (Target::Microk8s, "microk8s is installed and running"),
            None => (
                Target::Local,
                "no running microk8s found; pass --target kube for another cluster",
            ),
        };
        eprintln!("target: {} ({why})", format!("{t:?}").to_lowercase());
        t
    }
}

fn microk8s_running(sh: &Shell) -> bool {
    cmd!(sh, "microk8s status --format short")
        .quiet()
        .ignore_stderr()
        .read()
        .is_ok_and(|s| !s.contains("not running"))
}

/// Cluster targets are not wired to these commands yet; say so instead of half-working.
pub fn cluster_unsupported(t: Target, what: &str) -> Result<()> {
    bail!("`{what}` on the {t:?} target is not implemented yet (see the README, \"Status\"); use --target local, or `cargo xtask render` to review the manifests")
}
