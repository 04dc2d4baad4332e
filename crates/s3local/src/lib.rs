//! A real S3-compatible server on loopback: `s3s` with the `s3s-fs` backend and SigV4
//! authentication on, so request signing is really checked (a wrong secret gets 403).
//!
//! The local target runs one as its object store when no endpoint is configured, and the tests
//! start one per test on port 0. It counts requests per method so tests can assert, for
//! example, that a re-upload sent no PUT.
//!
//! Besides its owner's key pair it can accept read-only keys (see [`ReadKeys`]): each may GET
//! or HEAD objects under one key prefix and nothing else, checked by an s3s access hook.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Result};
use tokio::sync::oneshot;

/// A read-only key: its secret, and the prefix of the object keys it may read.
pub struct ReadOnly {
    pub secret_key: String,
    pub prefix: String,
}

/// Looks up a read-only key by its access key (`None`: no such key). A function rather than a
/// list, so keys derived from the owner's secret need no registration.
pub type ReadKeys = Arc<dyn Fn(&str) -> Option<ReadOnly> + Send + Sync>;

#[derive(Clone)]
struct Keys {
    access_key: String,
    secret_key: String,
    read: Option<ReadKeys>,
}

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.access_key {
            return Ok(SecretKey::from(self.secret_key.as_str()));
        }
        match self.read.as_ref().and_then(|f| f(access_key)) {
            Some(r) => Ok(SecretKey::from(r.secret_key)),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Keys {
    /// Runs after the signature was checked, so the access key here is proven.
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(ak) = cx.credentials().map(|c| c.access_key.clone()) else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        if ak == self.access_key {
            return Ok(());
        }
        let Some(r) = self.read.as_ref().and_then(|f| f(&ak)) else {
            return Err(s3_error!(AccessDenied));
        };
        let reads = matches!(cx.s3_op().name(), "GetObject" | "HeadObject");
        let inside =
            matches!(cx.s3_path(), S3Path::Object { key, .. } if key.starts_with(&r.prefix));
        if reads && inside {
            Ok(())
        } else {
            Err(s3_error!(
                AccessDenied,
                "{ak} may only read objects under {}",
                r.prefix
            ))
        }
    }
}

/// A running server; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves the directory `root` (one sub-directory per bucket) on `bind`, accepting requests
    /// signed with the given key pair only.
    pub fn start(
        root: &Path,
        bind: SocketAddr,
        access_key: &str,
        secret_key: &str,
    ) -> io::Result<Server> {
        Server::start_on(root, &[bind], access_key, secret_key)
    }

    /// As [`Server::start`], listening on every address of `binds` (e.g. loopback for the host
    /// and the node address for pods); `addr()` is the first.
    pub fn start_on(
        root: &Path,
        binds: &[SocketAddr],
        access_key: &str,
        secret_key: &str,
    ) -> io::Result<Server> {
        Server::start_with(root, binds, access_key, secret_key, None)
    }

    /// As [`Server::start_on`], also accepting the read-only keys `read` knows.
    pub fn start_with(
        root: &Path,
        binds: &[SocketAddr],
        access_key: &str,
        secret_key: &str,
        read: Option<ReadKeys>,
    ) -> io::Result<Server> {
        std::fs::create_dir_all(root)?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| io::Error::other(format!("s3s-fs: {e:?}")))?;
        let keys = Keys {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            read,
        };
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(keys.clone());
        b.set_access(keys);
        let service = b.build();

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listeners = binds
            .iter()
            .map(|a| rt.block_on(tokio::net::TcpListener::bind(a)))
            .collect::<io::Result<Vec<_>>>()?;
        let addr = listeners
            .first()
            .ok_or_else(|| io::Error::other("no address to listen on"))?
            .local_addr()?;
        let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let counts2 = counts.clone();
        let thread = std::thread::Builder::new()
            .name("s3local".into())
            .spawn(move || {
                rt.block_on(async move {
                    for listener in listeners {
                        let service = service.clone();
                        let counts = counts2.clone();
                        tokio::spawn(async move {
                            let http = ConnBuilder::new(TokioExecutor::new());
                            loop {
                                let Ok((socket, _)) = listener.accept().await else {
                                    continue;
                                };
                                let svc = service.clone();
                                let counts = counts.clone();
                                let counted = hyper::service::service_fn(
                                    move |req: http::Request<hyper::body::Incoming>| {
                                        *counts
                                            .lock()
                                            .unwrap()
                                            .entry(req.method().to_string())
                                            .or_default() += 1;
                                        hyper::service::Service::call(&svc, req)
                                    },
                                );
                                let conn = http
                                    .serve_connection(TokioIo::new(socket), counted)
                                    .into_owned();
                                tokio::spawn(async move {
                                    let _ = conn.await;
                                });
                            }
                        });
                    }
                    let _ = stop_rx.await;
                });
                // Dropping the runtime cancels the accept loops and per-connection tasks.
            })?;
        Ok(Server {
            addr,
            counts,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Starts on 127.0.0.1 with an ephemeral port.
    pub fn start_ephemeral(root: &Path, access_key: &str, secret_key: &str) -> io::Result<Server> {
        Server::start(
            root,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key,
            secret_key,
        )
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests with this HTTP method reached the server so far.
    pub fn requests(&self, method: &str) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Blocks until the server stops (it never does on its own); for the supervisor process.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(feature = "tls")]
pub mod tls;
