//! One pod's log stream, for following every replica: `kubectl logs -f` with the kubelet's
//! timestamps, so lines of several pods can be merged in time order.

use std::process::{Child, Stdio};

use anyhow::{Context, Result};

use super::Kube;

impl Kube<'_> {
    /// `kubectl logs -f <pod> -c <container> --timestamps`, from just after `since` (an RFC 3339
    /// time from an earlier stream of it) or from its last `tail` lines; stdout piped.
    pub fn follow_pod_log(
        &self,
        pod: &str,
        container: &str,
        since: Option<&str>,
        tail: u32,
    ) -> Result<Child> {
        let from = match since {
            Some(t) => format!("--since-time={t}"),
            None => format!("--tail={tail}"),
        };
        let mut c: std::process::Command = self
            .kubectl()
            .args(["logs", "-f", pod, "-c", container, "--timestamps", &from])
            .into();
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting kubectl logs for {pod}"))
    }
}
