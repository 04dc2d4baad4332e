//! The API server through one `kubectl proxy` per command: a process start costs ~0.1 s, so a
//! hot reload that made a kubectl call per step spent most of its time starting kubectl. The
//! proxy keeps kubectl the one authenticated transport (exec plugins, OIDC, MicroK8s' config
//! all stay its job) while requests go over HTTP/1.1 keep-alive, several at once.
//!
//! The proxy listens on a unix socket in `.aether/run/` (0700), not on a TCP port: on a shared
//! machine a loopback port would hand the developer's cluster rights to every local user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// One request: method, path (with query), and a body with its content type.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub body: Option<(&'static str, Vec<u8>)>,
}

impl Req {
    pub fn get(path: impl Into<String>) -> Req {
        Req {
            method: Method::GET,
            path: path.into(),
            body: None,
        }
    }
    pub fn patch(path: impl Into<String>, content_type: &'static str, body: Vec<u8>) -> Req {
        Req {
            method: Method::PATCH,
            path: path.into(),
            body: Some((content_type, body)),
        }
    }
}

/// A response's status and body.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Resp {
    /// The API server's own message for a failed request (its `Status` object), else the body.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string())
    }
}

pub struct Api {
    rt: tokio::runtime::Runtime,
    socket: PathBuf,
    log: PathBuf,
    proxy: Child,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Api {
    /// Starts `proxy` (a `kubectl … proxy` command line without its socket argument) on a socket
    /// in `dir` and waits until it accepts connections.
    pub fn start(mut proxy: Command, dir: &Path) -> Result<Api> {
        crate::config::private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        let socket = dir.join(format!("kube-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let line = format!("{proxy:?}");
        // Its messages go to a file: a pipe nobody reads would block it once full (a long
        // `dev` session), and the file is there to quote when it fails.
        let log_path = dir.join(format!("kube-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)?;
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal,
        // so the proxy never outlives the command, however the command ends. (The signal
        // follows the thread that spawned it: commands make their cluster calls on the main
        // thread.)
        unsafe {
            proxy.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = proxy
            .arg(format!("--unix-socket={}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {line}: is kubectl installed and on PATH?"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            if let Some(st) = child.try_wait()? {
                let err = std::fs::read_to_string(&log_path).unwrap_or_default();
                let _ = std::fs::remove_file(&log_path);
                bail!("{line} exited ({st}) before it served: {}", err.trim());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{line} did not listen on {} within 20 s", socket.display());
            }
            // pace: a proxy is up in ~0.1 s; a 2 ms poll costs nothing beside that.
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Api {
            rt,
            socket,
            log: log_path,
            proxy: child,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends one request.
    pub fn send(&self, req: Req) -> Result<Resp> {
        self.send_all(vec![req])
            .pop()
            .expect("one response per request")
    }

    /// Sends every request at once (one connection each, reused afterwards); the responses in
    /// the requests' order.
    pub fn send_all(&self, reqs: Vec<Req>) -> Vec<Result<Resp>> {
        let mut conns = Vec::with_capacity(reqs.len());
        {
            let mut idle = self.idle.lock().unwrap();
            for _ in &reqs {
                conns.push(idle.pop());
            }
        }
        let socket = self.socket.clone();
        let results = self.rt.block_on(async move {
            let tasks: Vec<_> = reqs
                .into_iter()
                .zip(conns)
                .map(|(req, conn)| tokio::spawn(one(socket.clone(), conn, req)))
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(match t.await {
                    Ok(r) => r,
                    Err(e) => Err(anyhow::anyhow!("request task failed: {e}")),
                });
            }
            out
        });
        let mut idle = self.idle.lock().unwrap();
        results
            .into_iter()
            .map(|r| {
                r.map(|(resp, conn)| {
                    if let Some(c) = conn {
                        idle.push(c);
                    }
                    resp
                })
            })
            .collect()
    }
}

async fn one(
    socket: PathBuf,
    conn: Option<SendRequest<Full<Bytes>>>,
    req: Req,
) -> Result<(Resp, Option<SendRequest<Full<Bytes>>>)> {
    let reused = match conn {
        Some(mut c) => c.ready().await.is_ok().then_some(c),
        None => None,
    };
    let mut sender = match reused {
        Some(c) => c,
        None => connect(&socket).await?,
    };
    let what = format!("{} {}", req.method, req.path);
    let mut b = Request::builder()
        .method(req.method)
        .uri(&req.path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::ACCEPT, "application/json");
    let body = match req.body {
        Some((ctype, body)) => {
            b = b.header(hyper::header::CONTENT_TYPE, ctype);
            Full::new(Bytes::from(body))
        }
        None => Full::new(Bytes::new()),
    };
    let resp = sender
        .send_request(b.body(body)?)
        .await
        .with_context(|| format!("{what} through kubectl proxy"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading the answer to {what}"))?
        .to_bytes()
        .to_vec();
    Ok((Resp { status, body }, Some(sender)))
}

async fn connect(socket: &Path) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to kubectl proxy at {}", socket.display()))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.log);
    }
}
