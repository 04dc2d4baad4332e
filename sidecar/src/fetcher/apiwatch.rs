//! News from the API server: a watch on this app's release ConfigMap, so a new release (or a
//! stage request) reaches the fetcher milliseconds after the CLI writes it, instead of when
//! the kubelet next refreshes the mounted volumes (0.2 s to over a second, per pod). The pod's
//! ServiceAccount may only get/list/watch that one ConfigMap; its token is mounted into this
//! container alone.
//!
//! The volumes stay the fallback: when the watch is forbidden, down, or not configured (no
//! in-cluster credentials), the loop runs on them as before, and `/status` says which path the
//! pod is on (`news`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::status::Status;

/// The in-cluster credentials of a pod (`rest.InClusterConfig` in client-go).
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ConfigMap's data as the watch last delivered it (`None`: nothing yet, or the watch is
/// down, in which case the volumes decide).
pub type Latest = Arc<Mutex<Option<BTreeMap<String, String>>>>;

pub struct WatchConfig {
    pub server: String,
    pub namespace: String,
    pub configmap: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
}

impl WatchConfig {
    /// From the pod's environment; `Err` says why there is no watch (then: volumes only).
    pub fn in_cluster(namespace: Option<String>, configmap: String) -> Result<WatchConfig> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .context("not in a pod (no KUBERNETES_SERVICE_HOST)")?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let dir = Path::new(SA_DIR);
        let token_file = dir.join("token");
        if !token_file.exists() {
            bail!("no ServiceAccount token at {}", token_file.display());
        }
        let namespace = match namespace {
            Some(n) => n,
            None => std::fs::read_to_string(dir.join("namespace"))
                .context("no namespace (set AETHER_FETCHER_NAMESPACE)")?
                .trim()
                .to_string(),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(WatchConfig {
            server: format!("https://{host}:{port}"),
            namespace,
            configmap,
            token_file,
            ca_file: dir.join("ca.crt"),
        })
    }

    fn url(&self) -> String {
        // timeoutSeconds: the server ends a watch by itself; a new one starts at once.
        // resourceVersion=0: served from the API server's watch cache, starting with the
        // ConfigMap as the cache has it (an ADDED event). Without it the server waits for its
        // cache to reach etcd's latest revision, which on a cluster whose etcd sends no
        // progress notifications fails after 3 s ("Too large resource version").
        format!(
            "{}/api/v1/namespaces/{}/configmaps?fieldSelector=metadata.name%3D{}&watch=true&resourceVersion=0&timeoutSeconds=240",
            self.server, self.namespace, self.configmap
        )
    }
}

/// Runs the watch on a thread of its own for the life of the process: each change of the
/// ConfigMap goes into `latest` and wakes the loop through `wake`.
pub fn spawn(cfg: WatchConfig, latest: Latest, wake: Sender<()>, status: Arc<Mutex<Status>>) {
    let set_news = move |news: String| {
        let mut s = status.lock().unwrap();
        if s.news.as_deref() != Some(news.as_str()) {
            log!("news of releases: {news}");
            s.news = Some(news);
        }
    };
    let spawned = std::thread::Builder::new()
        .name("api-watch".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(500);
            loop {
                let r = watch_once(&cfg, &latest, &wake, &mut |connected| {
                    if connected {
                        set_news("api (watching the release ConfigMap)".into());
                    }
                });
                // The volumes decide again until the watch is back.
                *latest.lock().unwrap() = None;
                match r {
                    Ok(()) => backoff = Duration::from_millis(500),
                    Err(e) => {
                        let forbidden = format!("{e:#}").contains("403");
                        set_news(format!("volumes (the API watch failed: {e:#})"));
                        // A forbidden watch stays forbidden until someone changes RBAC.
                        let wait = if forbidden {
                            Duration::from_secs(60)
                        } else {
                            backoff
                        };
                        std::thread::sleep(wait);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
                let _ = wake.send(());
            }
        });
    if let Err(e) = spawned {
        log!("cannot start the API watch (volumes only): {e}");
    }
}

/// One watch, until the server ends it (`Ok`) or it fails.
fn watch_once(
    cfg: &WatchConfig,
    latest: &Latest,
    wake: &Sender<()>,
    connected: &mut dyn FnMut(bool),
) -> Result<()> {
    // Re-read each time: the kubelet rotates the projected token.
    let token = std::fs::read_to_string(&cfg.token_file)
        .with_context(|| format!("reading {}", cfg.token_file.display()))?;
    let mut session = attohttpc::Session::new();
    session.connect_timeout(Duration::from_secs(5));
    session.read_timeout(Duration::from_secs(300));
    session.follow_redirects(false);
    for cert in load_certs(&cfg.ca_file)? {
        session.add_root_certificate(cert);
    }
    let resp = session
        .get(cfg.url())
        .bearer_auth(token.trim())
        .send()
        .context("connecting to the API server")?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        bail!("{} {msg}", status.as_u16());
    }
    connected(true);
    let (_, _, reader) = resp.split();
    for line in BufReader::new(reader).lines() {
        let line = line.context("reading the watch")?;
        let ev: serde_json::Value = serde_json::from_str(&line).context("parsing a watch event")?;
        match ev["type"].as_str() {
            Some("ADDED" | "MODIFIED") => {
                let data: BTreeMap<String, String> =
                    serde_json::from_value(ev["object"]["data"].clone()).unwrap_or_default();
                *latest.lock().unwrap() = Some(data);
                let _ = wake.send(());
            }
            Some("DELETED") => {
                *latest.lock().unwrap() = None;
                let _ = wake.send(());
            }
            Some("ERROR") => bail!("the watch ended: {}", ev["object"]["message"]),
            _ => {}
        }
    }
    Ok(())
}

fn load_certs(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the cluster's CA {}", path.display()))
}
