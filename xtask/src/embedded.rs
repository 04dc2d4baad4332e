//! The embedded S3 store (s3s + s3s-fs, SigV4 checked): the store of every target when no
//! endpoint is configured. It runs as a background `xtask local-store` process; its port,
//! generated credentials and pid live in `.aether/local/store.json` (mode 0600).
//!
//! It always listens on 127.0.0.1. For a cluster on this machine it also listens on the
//! node's address, which pods reach (`k8s-local`: the bridge 10.88.0.1; MicroK8s: the host's
//! address), so the CLI and the pods use one store with no port forwarder.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aether_artifact::store::{PartialStore, Secret, ENV_ACCESS_KEY, ENV_SECRET_KEY};
use anyhow::{Context, Result};

use crate::config::{random_hex, write_private};
use crate::proc::{alive, kill_group, port_open, wait_until};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StoreState {
    port: u16,
    access_key: String,
    secret_key: Secret,
    pid: Option<u32>,
    /// Addresses besides 127.0.0.1 it listens on.
    #[serde(default)]
    also: Vec<IpAddr>,
}

/// The running store: the endpoint for this machine, and one for pods when asked for.
pub struct Embedded {
    pub port: u16,
    pub access_key: String,
    pub secret_key: Secret,
}

impl Embedded {
    pub fn endpoint(&self, ip: IpAddr) -> String {
        format!("http://{}", SocketAddr::new(ip, self.port))
    }

    /// The store as this machine reaches it, layered under the configured region and bucket.
    pub fn partial(&self) -> PartialStore {
        PartialStore {
            endpoint: Some(self.endpoint(Ipv4Addr::LOCALHOST.into())),
            access_key: Some(self.access_key.clone()),
            secret_key: Some(self.secret_key.clone()),
            ..Default::default()
        }
    }
}

/// The store when it runs and listens beyond loopback (started for a cluster before).
pub fn running(dir: &Path) -> Option<Embedded> {
    let st: StoreState = serde_json::from_slice(&fs::read(state_path(dir)).ok()?).ok()?;
    (st.pid.is_some_and(alive) && port_open(st.port) && !st.also.is_empty()).then(|| st.into())
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("store.json")
}

/// Starts the store when it is not running (or does not listen on `also` yet) and returns it.
/// The port and credentials survive restarts, so endpoints written into a cluster stay valid.
pub fn ensure(dir: &Path, also: Option<IpAddr>) -> Result<Embedded> {
    fs::create_dir_all(dir)?;
    let path = state_path(dir);
    let mut st: StoreState = match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("reading {}; delete it to start over", path.display()))?,
        Err(_) => StoreState {
            port: crate::proc::free_port()?,
            access_key: format!("aether-{}", random_hex(6)?),
            secret_key: Secret::new(random_hex(20)?),
            pid: None,
            also: Vec::new(),
        },
    };
    let running = st.pid.is_some_and(alive) && port_open(st.port);
    let covers = also.is_none_or(|ip| st.also.contains(&ip));
    if running && covers {
        return Ok(st.into());
    }
    if running {
        // Same port, same data, one more address: restart it rather than run a second one.
        kill_group(st.pid.take().expect("running means a pid"))?;
    }
    if let Some(ip) = also {
        if !st.also.contains(&ip) {
            st.also.push(ip);
        }
    }
    // An address remembered from a cluster that has since stopped (its bridge is gone) would
    // make the bind fail; the next cluster command adds it back.
    st.also.retain(|ip| Some(*ip) == also || is_local(*ip));
    if port_open(st.port) {
        st.port = crate::proc::free_port()?;
    }
    let log = fs::File::create(dir.join("store.log"))?;
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let also_args: Vec<String> = st
        .also
        .iter()
        .flat_map(|ip| ["--also".to_string(), ip.to_string()])
        .collect();
    let child = Command::new(exe)
        .args(["local-store", "--data"])
        .arg(dir.join("s3"))
        .args(["--port", &st.port.to_string()])
        .args(also_args)
        .env(ENV_ACCESS_KEY, &st.access_key)
        .env(ENV_SECRET_KEY, st.secret_key.expose())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the embedded S3 store")?;
    st.pid = Some(child.id());
    write_private(&path, &serde_json::to_vec_pretty(&st)?)?;
    let log_path = dir.join("store.log");
    wait_until(Duration::from_secs(10), || {
        port_open(st.port) || !alive(child.id())
    })
    .ok()
    .filter(|_| alive(child.id()))
    .with_context(|| {
        format!(
            "the embedded store did not start: {}",
            fs::read_to_string(&log_path).unwrap_or_default().trim()
        )
    })?;
    let also_text: Vec<String> = st.also.iter().map(|ip| format!(" and {ip}")).collect();
    eprintln!(
        "started the embedded S3 store on 127.0.0.1{}:{} (data in {})",
        also_text.concat(),
        st.port,
        dir.join("s3").display()
    );
    Ok(st.into())
}

impl From<StoreState> for Embedded {
    fn from(s: StoreState) -> Embedded {
        Embedded {
            port: s.port,
            access_key: s.access_key,
            secret_key: s.secret_key,
        }
    }
}

pub fn stop(dir: &Path) -> Result<()> {
    let Ok(b) = fs::read(state_path(dir)) else {
        return Ok(());
    };
    let mut st: StoreState = serde_json::from_slice(&b)?;
    if let Some(pid) = st.pid.take() {
        kill_group(pid)?;
        eprintln!("stopped the embedded S3 store");
    }
    write_private(&state_path(dir), &serde_json::to_vec_pretty(&st)?)?;
    Ok(())
}

/// `xtask local-store`: runs the embedded S3 server until killed.
pub fn serve(data: &Path, port: u16, also: &[IpAddr]) -> Result<()> {
    let ak = std::env::var(ENV_ACCESS_KEY).context("AETHER_S3_ACCESS_KEY not set")?;
    let sk = std::env::var(ENV_SECRET_KEY).context("AETHER_S3_SECRET_KEY not set")?;
    let binds: Vec<SocketAddr> = std::iter::once(IpAddr::from(Ipv4Addr::LOCALHOST))
        .chain(also.iter().copied())
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    let server = aether_s3local::Server::start_with(
        data,
        &binds,
        &ak,
        &sk,
        Some(aether_store::read_keys(&sk)),
    )
    .with_context(|| format!("listening on {binds:?}"))?;
    eprintln!("embedded S3 store on {binds:?}");
    server.wait();
    Ok(())
}

/// Whether `ip` is an address of this machine (binding to it works).
pub fn is_local(ip: IpAddr) -> bool {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0)).is_ok()
}
