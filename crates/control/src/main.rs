//! `aether-control`: see the crate's documentation. Secrets (the admin token, the database
//! URL, the store's keys) come from the environment only, never from argv (visible in `ps`).

use std::path::PathBuf;
use std::sync::Arc;

use aether_artifact::control::ENV_ADMIN_TOKEN;
use aether_artifact::store::{PartialStore, Secret};
use aether_control::auth::{KubeReview, Verifier};
use aether_control::{db, server, ControlEnv};
use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[arg(long, env = ControlEnv::LISTEN, default_value = "0.0.0.0:8090")]
    listen: String,
    /// How pods prove which app they belong to.
    #[arg(long, env = ControlEnv::AUTH, value_enum, default_value = "kube")]
    auth: Auth,
    /// With `--auth kube`: the namespace of the apps (default: the control plane's own).
    #[arg(long, env = ControlEnv::NAMESPACE)]
    namespace: Option<String>,
    /// With `--auth kube`: the API server (default: from KUBERNETES_SERVICE_HOST/PORT).
    #[arg(long, env = ControlEnv::KUBE_API)]
    kube_api: Option<String>,
    #[arg(long, env = ControlEnv::KUBE_TOKEN_FILE, default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token")]
    kube_token_file: PathBuf,
    #[arg(long, env = ControlEnv::KUBE_CA_FILE, default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")]
    kube_ca_file: PathBuf,
    /// Sign each app's URLs with its derived read-only key (the project's own stores).
    #[arg(long, env = ControlEnv::DERIVE_READ_KEYS)]
    derive_read_keys: bool,
    #[arg(long, env = ControlEnv::WORKERS, default_value_t = 16)]
    workers: usize,
    /// How long to wait for the database at start (it may start beside us, as bootstrap's
    /// Postgres does), in seconds.
    #[arg(long, env = ControlEnv::DB_WAIT, default_value_t = 120)]
    db_wait: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Auth {
    Local,
    Kube,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let secret = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .with_context(|| format!("{name} is not set: give it in the environment (a Secret), never as an argument"))
    };
    let admin = Secret::new(secret(ENV_ADMIN_TOKEN)?);
    let url = secret(ControlEnv::DATABASE_URL)?;
    let store = PartialStore::from_env()
        .finish()
        .map_err(anyhow::Error::msg)
        .context("the store the control plane signs URLs for")?;
    let verifier = match args.auth {
        Auth::Local => Verifier::Local,
        Auth::Kube => {
            let server = match args.kube_api {
                Some(s) => s,
                None => {
                    let host = std::env::var("KUBERNETES_SERVICE_HOST")
                        .context("not in a pod (no KUBERNETES_SERVICE_HOST): pass --kube-api, or --auth local")?;
                    let port =
                        std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        host
                    };
                    format!("https://{host}:{port}")
                }
            };
            let namespace = match args.namespace {
                Some(n) => n,
                None => std::fs::read_to_string(format!("{SA_DIR}/namespace"))
                    .context("no namespace: pass --namespace")?
                    .trim()
                    .to_string(),
            };
            if namespace.is_empty() {
                bail!("an empty namespace accepts no app: pass --namespace");
            }
            Verifier::Kube(KubeReview::new(
                server,
                args.kube_token_file,
                args.kube_ca_file,
                namespace,
            )?)
        }
    };
    let db = open_waiting(&url, std::time::Duration::from_secs(args.db_wait))?;
    let listener = server::listen(&args.listen)?;
    let addr = listener
        .server_addr()
        .to_ip()
        .context("the listener has no IP address")?;
    let state = Arc::new(server::State::new(
        db,
        verifier,
        admin,
        store,
        args.derive_read_keys,
    ));
    server::spawn(listener, state, args.workers);
    eprintln!(
        "aether-control: listening on {addr}, records in {}",
        db::redact(&url)
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    if let Some(sig) = signals.forever().next() {
        eprintln!("aether-control: signal {sig}, stopping");
    }
    Ok(())
}

/// Opens the records, retrying while the database is not up yet: exiting instead would put
/// the pod into the kubelet's crash backoff (10 s, 20 s, …) just as the database comes up.
fn open_waiting(url: &str, wait: std::time::Duration) -> Result<db::Db> {
    let deadline = std::time::Instant::now() + wait;
    let mut said = None::<std::time::Instant>;
    loop {
        match db::Db::open(url) {
            Ok(db) => return Ok(db),
            Err(e) if std::time::Instant::now() < deadline => {
                if said.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(5)) {
                    eprintln!("aether-control: waiting for the database: {e:#}");
                    said = Some(std::time::Instant::now());
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(e) => {
                return Err(e.context(format!(
                    "opening the records at {} (waited {wait:?})",
                    db::redact(url)
                )))
            }
        }
    }
}
