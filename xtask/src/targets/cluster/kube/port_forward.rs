//! `kubectl port-forward` to one pod's loopback (node's inspector for `debug`): the API
//! server's streaming upgrade to the kubelet is kubectl's job, and the RBAC right it needs
//! (`pods/portforward`) is the one a developer's kubeconfig is expected to have.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::Kube;
use crate::targets::Forward;

/// How long kubectl may take to say where it listens.
const READY: Duration = Duration::from_secs(30);

impl Kube<'_> {
    /// Forwards a free port on 127.0.0.1 here to `pod`'s `port` (its loopback, too).
    pub fn port_forward(&self, pod: &str, port: u16) -> Result<Forward> {
        let mut c: std::process::Command = self
            .kubectl()
            .args([
                "port-forward",
                "--address",
                "127.0.0.1",
                &format!("pod/{pod}"),
                &format!(":{port}"),
            ])
            .into();
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting kubectl port-forward to {pod}"))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let etx = tx.clone();
        std::thread::spawn(move || {
            // "Forwarding from 127.0.0.1:41234 -> 9229"; later lines ("Handling connection
            // for …") are read and dropped so kubectl never blocks on a full pipe.
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let local = line
                    .strip_prefix("Forwarding from 127.0.0.1:")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|p| p.parse::<u16>().ok());
                if let Some(p) = local {
                    let _ = tx.send(Ok(p));
                }
            }
        });
        std::thread::spawn(move || {
            let said: Vec<String> = BufReader::new(err).lines().map_while(Result::ok).collect();
            let _ = etx.send(Err(said.join("\n")));
        });
        let mut fwd = Forward {
            local: 0,
            child: Some(child),
        };
        match rx.recv_timeout(READY) {
            Ok(Ok(local)) => {
                fwd.local = local;
                Ok(fwd)
            }
            Ok(Err(said)) => bail!("kubectl port-forward to {pod} failed: {}", said.trim()),
            Err(_) => bail!("kubectl port-forward to {pod} did not start within {READY:?}"),
        }
    }
}
