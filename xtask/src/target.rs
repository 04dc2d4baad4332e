//! Where apps run: `microk8s`, `kube` (any kubeconfig context) or `local` (processes on this
//! machine). Every command that touches a running app takes `--target` / `AETHER_TARGET`.

use xshell::{cmd, Shell};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Microk8s,
    Kube,
    Local,
}

#[derive(clap::Args, Clone, Debug)]
pub struct TargetArgs {
    /// Where the app runs [default: microk8s when installed and running, else local]
    #[arg(long, global = true, env = "AETHER_TARGET", value_enum)]
    pub target: Option<Target>,
    /// kubeconfig context for the kube target (default: the current context).
    #[arg(long, global = true, env = "AETHER_KUBE_CONTEXT")]
    pub context: Option<String>,
    /// Namespace of the apps on a cluster.
    #[arg(long, global = true, env = "AETHER_NAMESPACE", default_value = crate::manifests::NAMESPACE)]
    pub namespace: String,
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
