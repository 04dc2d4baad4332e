//! The local target's control plane: `aether-control` (built from this workspace) with its
//! records in SQLite (`.aether/local/control.db`), started in the background on first use as
//! the embedded store is, so the local default needs no command of its own. Its port, admin
//! token and pid live in `.aether/local/control.json` (mode 0600).
//!
//! `AETHER_CONTROL=off` turns it off: pods then read the store with a key, as before.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aether_artifact::control::{self, Client, ENV_ADMIN_TOKEN};
use aether_artifact::store::{self as st, Secret, StoreConfig};
use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::config::{random_hex, write_private};
use crate::proc::{alive, kill_group, port_open, wait_until};

/// Set to `off` to run the local target without a control plane.
pub const ENV_SWITCH: &str = "AETHER_CONTROL";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct State {
    port: u16,
    admin: Secret,
    pid: Option<u32>,
    /// The store it signs URLs for: another store (the embedded one moved) means a restart.
    store_endpoint: String,
}

/// The running control plane, as the CLI (admin) and local pods reach it.
pub struct Running {
    pub url: String,
    pub admin: Secret,
}

impl Running {
    pub fn client(&self) -> Client {
        Client::with_token(&self.url, self.admin.clone(), Duration::from_secs(10))
    }

    /// The token a local pod of `app` presents.
    pub fn pod_token(&self, app: &aether_artifact::AppName) -> Secret {
        control::local_token(app, &self.admin)
    }
}

pub fn enabled() -> bool {
    std::env::var(ENV_SWITCH).map_or(true, |v| v != "off")
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("control.json")
}

/// The control plane when it runs (without starting it).
pub fn running(dir: &Path) -> Option<Running> {
    let s: State = serde_json::from_slice(&fs::read(state_path(dir)).ok()?).ok()?;
    (s.pid.is_some_and(alive) && port_open(s.port)).then(|| Running {
        url: format!("http://127.0.0.1:{}", s.port),
        admin: s.admin,
    })
}

/// Starts the control plane when it is not running for `store`, and returns it. `derive`: the
/// store derives per-app read keys (the embedded one), so URLs are signed with those.
pub fn ensure(sh: &Shell, dir: &Path, store: &StoreConfig, derive: bool) -> Result<Running> {
    fs::create_dir_all(dir)?;
    let path = state_path(dir);
    let mut s: State = match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("reading {}; delete it to start over", path.display()))?,
        Err(_) => State {
            port: crate::proc::free_port()?,
            admin: Secret::new(random_hex(24)?),
            pid: None,
            store_endpoint: store.endpoint.clone(),
        },
    };
    let up = s.pid.is_some_and(alive) && port_open(s.port);
    if up && s.store_endpoint == store.endpoint {
        return Ok(Running {
            url: format!("http://127.0.0.1:{}", s.port),
            admin: s.admin,
        });
    }
    if let Some(pid) = s.pid.take().filter(|_| up) {
        kill_group(pid)?;
    }
    if port_open(s.port) {
        s.port = crate::proc::free_port()?;
    }
    s.store_endpoint = store.endpoint.clone();
    let bin = control_bin(sh)?;
    let log = fs::File::create(dir.join("control.log"))?;
    let mut c = Command::new(bin);
    c.args([
        "--auth",
        "local",
        "--listen",
        &format!("127.0.0.1:{}", s.port),
    ])
    .env_clear()
    .env(ENV_ADMIN_TOKEN, s.admin.expose())
    .env(
        control::ControlEnv::DATABASE_URL,
        format!("sqlite:{}", dir.join("control.db").display()),
    )
    .env(st::ENV_ENDPOINT, &store.endpoint)
    .env(st::ENV_REGION, &store.region)
    .env(st::ENV_BUCKET, &store.bucket)
    .env(st::ENV_ACCESS_KEY, &store.access_key)
    .env(st::ENV_SECRET_KEY, store.secret_key.expose());
    if derive {
        c.arg("--derive-read-keys");
    }
    if let Some(ca) = &store.ca_file {
        c.env(st::ENV_CA_FILE, ca);
    }
    let child = c
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting aether-control")?;
    s.pid = Some(child.id());
    write_private(&path, &serde_json::to_vec_pretty(&s)?)?;
    let running = Running {
        url: format!("http://127.0.0.1:{}", s.port),
        admin: s.admin.clone(),
    };
    let client = running.client();
    wait_until(Duration::from_secs(15), || {
        client.health().is_ok() || !alive(child.id())
    })
    .ok()
    .filter(|_| alive(child.id()))
    .with_context(|| {
        format!(
            "the local control plane did not start: {}",
            fs::read_to_string(dir.join("control.log"))
                .unwrap_or_default()
                .trim()
        )
    })?;
    eprintln!(
        "started the local control plane on {} (records in {})",
        running.url,
        dir.join("control.db").display()
    );
    Ok(running)
}

pub fn stop(dir: &Path) -> Result<()> {
    let Ok(b) = fs::read(state_path(dir)) else {
        return Ok(());
    };
    let mut s: State = serde_json::from_slice(&b)?;
    if let Some(pid) = s.pid.take() {
        kill_group(pid)?;
        eprintln!("stopped the local control plane");
    }
    write_private(&state_path(dir), &serde_json::to_vec_pretty(&s)?)?;
    Ok(())
}

/// `AETHER_CONTROL_BIN`, else `aether-control` built from this workspace.
pub fn control_bin(sh: &Shell) -> Result<PathBuf> {
    if let Ok(p) = std::env::var("AETHER_CONTROL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let _dir = sh.push_dir(crate::project_root());
    cmd!(sh, "cargo build --quiet --package aether-control")
        .run()
        .context("building aether-control")?;
    Ok(crate::target_dir().join("debug").join("aether-control"))
}
