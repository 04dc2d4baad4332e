//! `cargo xtask debug <app> [--pod P]`: node's inspector on a live pod until Ctrl-C, then back
//! to normal; `--off` turns off one left on (a session killed with SIGKILL).

use std::time::Duration;

use aether_artifact::AppName;
use anyhow::{bail, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::Ctx;
use crate::ops::inspector;

/// Restart a pod's app with node's inspector (no rollout), forward it here, and print the
/// address for Chrome DevTools; back to normal on Ctrl-C.
#[derive(clap::Args)]
pub struct Debug {
    app: AppName,
    /// The pod [default: the first live one].
    #[arg(long)]
    pod: Option<String>,
    /// Turn the inspector off (a session that was killed left it on).
    #[arg(long)]
    off: bool,
    /// Seconds the pod's app may take to restart, each way.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

impl Debug {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let t = ctx.target();
        let within = Duration::from_secs(self.timeout);
        if self.off {
            let pods = match &self.pod {
                Some(p) => vec![p.clone()],
                None => t.pods(&self.app)?,
            };
            for p in &pods {
                inspector::detach(&*t, &self.app, p, within)?;
                eprintln!("{p} runs without the inspector");
            }
            return Ok(());
        }
        // Registered first: a Ctrl-C while the pod restarts still turns the inspector off.
        let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let mut a = inspector::attach(&*t, &self.app, self.pod.as_deref(), within)?;
        eprintln!(
            "{}'s app runs with node's inspector on {} (inside the pod), forwarded to 127.0.0.1:{}",
            a.pod, a.inside, a.forward.local
        );
        eprintln!("open in Chrome: {}", a.devtools);
        eprintln!(
            "or chrome://inspect → Configure… → add 127.0.0.1:{}; Ctrl-C ends the session and restarts the app without it",
            a.forward.local
        );
        println!("pod={}", a.pod);
        println!("inspector={}", a.ws);
        println!("devtools={}", a.devtools);
        let ended = wait_for_end(signals, &mut a.forward, || {
            // kubectl's forward outlives a deleted pod until a connection tries it.
            match t.pods(&self.app) {
                Ok(pods) if !pods.contains(&a.pod) => Some(format!("the pod {} is gone", a.pod)),
                _ => None,
            }
        });
        eprintln!(
            "ending the session: {}",
            ended.as_deref().unwrap_or("asked to stop")
        );
        let pod = a.pod.clone();
        drop(a);
        let off = inspector::detach(&*t, &self.app, &pod, within);
        if off.is_ok() {
            eprintln!("{pod} serves without the inspector again");
        }
        match (ended, off) {
            (None, off) => off,
            (Some(why), Ok(())) => bail!("the debug session ended early: {why}"),
            (Some(why), Err(e)) => bail!(
                "the debug session ended early: {why}; turning the inspector off failed too: \
                 {e:#} (a replacement pod starts without it; else run `cargo xtask debug {} --off`)",
                self.app
            ),
        }
    }
}

/// Until a stop signal (`None`), the forward ends or the pod goes (why).
fn wait_for_end(
    mut signals: signal_hook::iterator::Signals,
    fwd: &mut crate::targets::Forward,
    gone: impl Fn() -> Option<String>,
) -> Option<String> {
    let mut ticks = 0u32;
    loop {
        if signals.pending().next().is_some() {
            return None;
        }
        if let Some(why) = fwd.ended() {
            return Some(why);
        }
        ticks += 1;
        // The pod is asked about once a second (a request to the API server on a cluster).
        if ticks.is_multiple_of(10) {
            if let Some(why) = gone() {
                return Some(why);
            }
        }
        // pace: how soon a stop signal or a dead forward is noticed.
        std::thread::sleep(Duration::from_millis(100));
    }
}
