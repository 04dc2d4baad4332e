//! /healthz, /readyz (503 until the wanted release is live: the pod's startup probe),
//! /app-ready (503 unless `aether-run` reports a live app: the app container's readiness),
//! /status, /metrics. A blocking server on its own thread.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use aether_artifact::FetcherEnv;

use super::status::{metrics, Status};

pub fn spawn(
    bind: &str,
    status: Arc<Mutex<Status>>,
    run_status: std::path::PathBuf,
) -> Result<std::net::SocketAddr> {
    // `:8081` means every interface, as in Go.
    let addr = if bind.starts_with(':') {
        format!("0.0.0.0{bind}")
    } else {
        bind.to_string()
    };
    let server = tiny_http::Server::http(&addr)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("listening on {addr} (--http-bind)"))?;
    let local = server
        .server_addr()
        .to_ip()
        .context("HTTP server has no IP address")?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let s = status.lock().unwrap().clone().with_runner(&run_status);
                let (code, ctype, body) = match req.url() {
                    "/healthz" => (200, "text/plain", "ok\n".to_string()),
                    "/readyz" if s.ready => (200, "text/plain", "ready\n".to_string()),
                    "/readyz" => (
                        503,
                        "text/plain",
                        format!(
                            "not ready: {}\n",
                            s.last_error
                                .as_deref()
                                .unwrap_or("no release published yet")
                        ),
                    ),
                    p if p == FetcherEnv::APP_READY_PATH => match s.app_ready() {
                        Ok(()) => (200, "text/plain", "app serving\n".to_string()),
                        Err(why) => (503, "text/plain", format!("app not ready: {why}\n")),
                    },
                    "/status" => (
                        200,
                        "application/json",
                        serde_json::to_string(&s).unwrap_or_default(),
                    ),
                    "/metrics" => (200, "text/plain; version=0.0.4", metrics(&s)),
                    _ => (404, "text/plain", "not found\n".to_string()),
                };
                let header =
                    tiny_http::Header::from_bytes("Content-Type", ctype).expect("static header");
                let _ = req.respond(
                    tiny_http::Response::from_string(body)
                        .with_status_code(code)
                        .with_header(header),
                );
            }
        })?;
    Ok(local)
}
