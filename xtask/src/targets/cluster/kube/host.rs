//! MicroK8s itself, on this machine: whether it runs, its version, installing and starting it
//! (`bootstrap`, `doctor`). The cluster inside is reached through [`super::Kube`].

use anyhow::Result;
use xshell::{cmd, Shell};

/// Whether MicroK8s is installed and running (the default target then).
pub fn microk8s_running(sh: &Shell) -> bool {
    cmd!(sh, "microk8s status --format short")
        .quiet()
        .ignore_stderr()
        .read()
        .is_ok_and(|s| !s.contains("not running"))
}

/// `microk8s version`'s first line, when MicroK8s is installed.
pub fn microk8s_version(sh: &Shell) -> Option<String> {
    cmd!(sh, "microk8s version")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
}

/// `sudo snap install microk8s` from `channel`.
pub fn install_microk8s(sh: &Shell, channel: &str) -> Result<()> {
    Ok(cmd!(
        sh,
        "sudo snap install microk8s --classic --channel={channel}"
    )
    .run()?)
}

/// `sudo microk8s start`.
pub fn start_microk8s(sh: &Shell) -> Result<()> {
    Ok(cmd!(sh, "sudo microk8s start").run()?)
}
