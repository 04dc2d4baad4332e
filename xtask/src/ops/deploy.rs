//! Deploy: upload an app, make it the wanted release, create what is missing on the target and
//! wait until every pod serves it. Shared by `deploy-sample`, `dev` (an app not yet running)
//! and the bench.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aether_artifact::AppName;
use anyhow::Result;

use crate::config::Global;
use crate::ops::upload::upload;
use crate::release::Release;
use crate::targets::{DeployOpts, Running, Target};

/// `examples/sample-node`, generated when missing.
pub fn sample_dir(global: &Global) -> Result<PathBuf> {
    let d = global.project_dir().join("examples/sample-node");
    if crate::ops::sample::ensure(&d)? {
        eprintln!("generated the sample app in {}", d.display());
    }
    Ok(d)
}

/// Upload `dir`, make it the wanted release (an existing app through [`Target::publish`]),
/// create what is missing, wait until every pod serves it; prints `url=` and `digest=`.
pub fn deploy(
    t: &dyn Target,
    global: &Global,
    app: &AppName,
    dir: &Path,
    timeout: Duration,
    opts: &DeployOpts,
) -> Result<Running> {
    let control = t.control()?;
    // With a control plane, pods hold no store key (they get read URLs for their own app).
    let creds = match &control {
        Some(_) => None,
        None => Some(t.pod_credentials(app, opts.allow_writer_credentials)?),
    };
    keep_verification(t, app, opts.allow_unsigned)?;
    match (&creds, &control) {
        (Some(c), _) => eprintln!("{app}'s pods read the store with {}", c.kind.describe()),
        (None, Some(c)) => eprintln!(
            "{app}'s pods hold no store key: the control plane at {} hands them read URLs for {app}'s artifacts alone",
            c.base()
        ),
        (None, None) => {}
    }
    let up = upload(&t.store()?, control.as_ref(), global, app, dir, 3600, true)?;
    if let Some(line) = up.deps_line() {
        eprintln!("{line}");
    }
    eprintln!("{}", up.summary());
    let first = Release::default()
        .next(up.digest)
        .expect("an empty release differs from any digest");
    if t.release(app)?.is_some() {
        match t.publish(app, &mut |cur| Ok(cur.next(up.digest)))? {
            Some(p) => eprintln!(
                "release {app}: {} generation {} (signalled {} running pod(s))",
                up.digest.short(),
                p.release.generation,
                p.signalled.len()
            ),
            None => eprintln!(
                "release {app}: {} is already the wanted version",
                up.digest.short()
            ),
        }
    } else {
        eprintln!("release {app}: {} generation 1", up.digest.short());
    }
    let opts = DeployOpts {
        runtime: crate::targets::Runtime {
            node_major: up.node_major,
            glibc: up.deps.as_ref().is_some_and(|d| d.deps.native),
            content_bytes: up.content_bytes + up.deps.as_ref().map_or(0, |d| d.size.content_bytes),
        },
        pod_credentials: creds,
        ..opts.clone()
    };
    if opts.runtime.glibc {
        eprintln!(
            "{app}'s dependencies hold native addons (*.node): it runs on {} (glibc), not Alpine",
            opts.runtime.node_image()
        );
    }
    let running = t.ensure_running(app, &first, &opts)?;
    t.wait_served(app, &up.digest, timeout)?;
    eprintln!("{app} is serving {}", up.digest.short());
    if let Some(url) = &running.url {
        println!("url={url}");
    }
    println!("digest={}", up.digest);
    Ok(running)
}

/// Refuses a deploy that would turn signature verification off on pods that have it: a
/// teammate's shell without `AETHER_VERIFY_KEY` must not drop it from every pod in silence.
/// What the pods verify with is what their fetchers report, so this holds on every target.
fn keep_verification(t: &dyn Target, app: &AppName, allow_unsigned: bool) -> Result<()> {
    let verifying: Vec<(String, String)> = t
        .statuses(app)?
        .into_iter()
        .filter_map(|p| Some((p.pod, p.status?.verifies_key?)))
        .collect();
    let Some((pod, id)) = verifying.first() else {
        return Ok(());
    };
    match crate::keys::verify_key()? {
        None if allow_unsigned => {
            eprintln!(
                "warning: {app}'s pods verify signatures (key {id}); this deploy turns that off \
                 (--allow-unsigned)"
            );
            Ok(())
        }
        None => anyhow::bail!(
            "{app} runs with signature verification (pod {pod}: key {id}), and this deploy has \
             no verify key: it would turn verification off on every pod. Set AETHER_VERIFY_KEY \
             (the `.pub` file of `cargo xtask keygen`), or pass --allow-unsigned to turn it off \
             on purpose"
        ),
        Some(k) => {
            let new = aether_artifact::provenance::key_id(&k)?;
            if new != *id {
                eprintln!("note: {app}'s verify key changes from {id} to {new}");
            }
            Ok(())
        }
    }
}
