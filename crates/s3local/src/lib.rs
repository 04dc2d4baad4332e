//! A real S3-compatible server on loopback: `s3s` with the `s3s-fs` backend and SigV4
//! authentication on, so request signing is really checked (a wrong secret gets 403).
//!
//! The local target runs one as its object store when no endpoint is configured, and the tests
//! start one per test on port 0. It counts requests per method so tests can assert, for
//! example, that a re-upload sent no PUT.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::sync::oneshot;

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
        std::fs::create_dir_all(root)?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| io::Error::other(format!("s3s-fs: {e:?}")))?;
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(access_key, secret_key));
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
