//! `debug`: node's inspector on one pod's app, written once against [`Target`]. The pod's
//! `aether-run` switches to a process with the inspector on 127.0.0.1 (no rollout, no dropped
//! request), this machine reaches it through a forward, and [`detach`] switches back.

use std::time::{Duration, Instant};

use aether_artifact::AppName;
use anyhow::{bail, Context, Result};

use crate::targets::{Forward, Target};

/// An inspector reachable from this machine.
pub struct Attached {
    pub pod: String,
    /// The inspector's address inside the pod.
    pub inside: String,
    pub forward: Forward,
    /// The WebSocket a DevTools client connects to, through the forward.
    pub ws: String,
    /// The address to paste into Chrome (DevTools for node).
    pub devtools: String,
}

/// Turns the inspector on for `pod` (default: the first live pod) and waits until it answers
/// through a forward. On failure the pod is asked to run without it again.
pub fn attach(
    t: &dyn Target,
    app: &AppName,
    pod: Option<&str>,
    within: Duration,
) -> Result<Attached> {
    let pods = t.pods(app)?;
    let pod = match pod {
        Some(p) if pods.iter().any(|x| x == p) => p.to_string(),
        Some(p) => bail!(
            "{app} has no live pod {p}; its pods: {}",
            if pods.is_empty() {
                "none".into()
            } else {
                pods.join(", ")
            }
        ),
        None => match pods.first() {
            Some(p) => p.clone(),
            None => {
                bail!("no pod of {app} is running: `cargo xtask deploy-sample {app}` starts one")
            }
        },
    };
    let port = t.inspector_port()?;
    t.set_inspector(app, &pod, Some(port))?;
    let inside = format!("127.0.0.1:{port}");
    let r = (|| {
        wait_runner(t, app, &pod, Some(&inside), within)?;
        let forward = t.forward(&pod, port)?;
        let id = target_id(forward.local, within)?;
        let via = format!("127.0.0.1:{}/{id}", forward.local);
        Ok(Attached {
            pod: pod.clone(),
            inside: inside.clone(),
            ws: format!("ws://{via}"),
            devtools: format!(
                "devtools://devtools/bundled/js_app.html?experiments=true&v8only=true&ws={via}"
            ),
            forward,
        })
    })();
    if r.is_err() {
        if let Err(e) = t.set_inspector(app, &pod, None) {
            eprintln!("warning: could not turn the inspector off again: {e:#}");
        }
    }
    r
}

/// Turns the inspector off on `pod` and waits until its app runs without it.
pub fn detach(t: &dyn Target, app: &AppName, pod: &str, within: Duration) -> Result<()> {
    t.set_inspector(app, pod, None)?;
    wait_runner(t, app, pod, None, within)
}

/// Waits until `pod`'s `aether-run` serves from a process whose inspector is `want`.
fn wait_runner(
    t: &dyn Target,
    app: &AppName,
    pod: &str,
    want: Option<&str>,
    within: Duration,
) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let st = t.statuses(app)?;
        let seen = st.iter().find(|p| p.pod == pod);
        let runner = seen.and_then(|p| p.status.as_ref()?.runner.as_ref());
        if runner.is_some_and(|r| {
            r.inspector.as_deref() == want && r.state == aether_artifact::RunState::Serving
        }) {
            return Ok(());
        }
        if t0.elapsed() >= within {
            let what = match want {
                Some(a) => format!("with node's inspector on {a}"),
                None => "without the inspector".into(),
            };
            let why = match (seen, runner) {
                (None, _) => "the pod is gone".to_string(),
                (Some(p), None) => p
                    .error
                    .clone()
                    .unwrap_or_else(|| "its app reports nothing (no aether-run)".into()),
                (Some(_), Some(r)) => r
                    .last_failure
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", r.state).to_lowercase()),
            };
            bail!("{pod}'s app did not restart {what} within {within:?}: {why}");
        }
        // pace: polling the pod's status, as `hot-patch --wait` does.
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The inspector's target id, from its `/json/list` (the forward may need a moment).
fn target_id(local: u16, within: Duration) -> Result<String> {
    let url = format!("http://127.0.0.1:{local}/json/list");
    let t0 = Instant::now();
    loop {
        let got = attohttpc::get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .context("asking the inspector for its targets")
            .and_then(|r| Ok(r.text()?))
            .and_then(|b| Ok(serde_json::from_str::<serde_json::Value>(&b)?));
        let id = got
            .as_ref()
            .ok()
            .and_then(|v| v[0]["id"].as_str().map(str::to_string));
        match (id, got) {
            (Some(id), _) => return Ok(id),
            (None, Err(e)) if t0.elapsed() >= within => return Err(e.context(url)),
            (None, Ok(v)) if t0.elapsed() >= within => bail!("{url} lists no target: {v}"),
            _ => {}
        }
        // pace: the inspector opens as soon as the port is free.
        std::thread::sleep(Duration::from_millis(50));
    }
}
