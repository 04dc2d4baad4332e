//! The HTTP API (see [`aether_artifact::control`] for the routes and types): a pool of
//! blocking worker threads on one listener. Registrations and history go to the database;
//! read URLs need none of it (they are signed from the store key in memory), so a slow
//! database never slows a fetcher down.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use aether_artifact::control::{ApiError, Identity, ReadUrls, Register, Registered, Urls, URL_TTL};
use aether_artifact::store::{read_credentials, read_prefix, Secret, Store, StoreConfig};
use aether_artifact::{AppName, Digest};
use anyhow::{anyhow, Context, Result};
use tiny_http::{Header, Method, Request, Response};

use crate::auth::{is_admin, Refused, Verifier};
use crate::db::Db;

/// The largest request body: a provenance record and its signature are a few KiB.
const MAX_BODY: u64 = 1 << 20;

pub struct State {
    pub db: Mutex<Db>,
    pub verifier: Verifier,
    pub admin: Secret,
    pub store: StoreConfig,
    /// Sign each app's URLs with its derived read-only key (the project's own stores), so even
    /// a URL made for the wrong key could not read another app's objects.
    pub derive_read_keys: bool,
    signers: Mutex<HashMap<AppName, Arc<Store>>>,
}

impl State {
    pub fn new(
        db: Db,
        verifier: Verifier,
        admin: Secret,
        store: StoreConfig,
        derive_read_keys: bool,
    ) -> State {
        State {
            db: Mutex::new(db),
            verifier,
            admin,
            store,
            derive_read_keys,
            signers: Mutex::new(HashMap::new()),
        }
    }
}

/// Serves until the process ends; returns once `workers` threads take requests.
pub fn spawn(server: Arc<tiny_http::Server>, state: Arc<State>, workers: usize) {
    for _ in 0..workers.max(1) {
        let (server, state) = (server.clone(), state.clone());
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                handle(&state, req);
            }
        });
    }
}

/// An error answer: status and JSON body.
struct Fail(u16, ApiError);

fn fail(status: u16, cause: &str, error: impl std::fmt::Display) -> Fail {
    Fail(
        status,
        ApiError {
            error: error.to_string(),
            cause: cause.to_string(),
        },
    )
}

fn handle(state: &State, mut req: Request) {
    let answer = route(state, &mut req);
    let (status, body) = match answer {
        Ok((status, v)) => (status, v),
        Err(Fail(status, e)) => {
            if status >= 500 {
                eprintln!("[control] {} {}: {}", req.method(), req.url(), e.error);
            }
            (
                status,
                serde_json::to_value(e).expect("ApiError serialises"),
            )
        }
    };
    let resp = Response::from_data(serde_json::to_vec(&body).expect("JSON serialises"))
        .with_status_code(status)
        .with_header(Header::from_bytes("content-type", "application/json").expect("valid header"));
    let _ = req.respond(resp);
}

fn route(state: &State, req: &mut Request) -> Result<(u16, serde_json::Value), Fail> {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let ok = |v: serde_json::Value| Ok((200, v));
    match (&method, parts.as_slice()) {
        (Method::Get, ["healthz"]) => {
            state.db.lock().unwrap().ping().map_err(|e| {
                fail(
                    503,
                    "database",
                    format!("the database does not answer: {e:#}"),
                )
            })?;
            ok(serde_json::json!({"ok": true}))
        }
        (Method::Get, ["v1", "apps"]) => {
            admin(state, req)?;
            let apps = state.db.lock().unwrap().apps().map_err(db_fail)?;
            ok(serde_json::to_value(apps).expect("serialises"))
        }
        (Method::Get, ["v1", "apps", app, "releases"]) => {
            admin(state, req)?;
            let app = app_name(app)?;
            let list = state.db.lock().unwrap().releases(&app).map_err(db_fail)?;
            ok(serde_json::to_value(list).expect("serialises"))
        }
        (Method::Get, ["v1", "apps", app, "releases", digest]) => {
            admin(state, req)?;
            let app = app_name(app)?;
            let digest = Digest::parse(digest).map_err(|e| fail(400, "bad-request", e))?;
            match state
                .db
                .lock()
                .unwrap()
                .release(&app, &digest)
                .map_err(db_fail)?
            {
                Some(e) => ok(serde_json::to_value(e).expect("serialises")),
                None => Err(fail(
                    404,
                    "not-found",
                    format!("{app} has no registered release {digest}"),
                )),
            }
        }
        (Method::Post, ["v1", "apps", app, "releases"]) => {
            admin(state, req)?;
            let app = app_name(app)?;
            let r: Register = body(req)?;
            check_record(&app, &r)?;
            let (entry, created) = state
                .db
                .lock()
                .unwrap()
                .register(&app, &r, aether_artifact::unix_now_ms())
                .map_err(db_fail)?;
            let status = if created { 201 } else { 200 };
            Ok((
                status,
                serde_json::to_value(Registered { entry, created }).expect("serialises"),
            ))
        }
        (Method::Post, ["v1", "apps", app, "read-urls"]) => {
            let app = app_name(app)?;
            let who = pod(state, req)?;
            if who.app != app {
                return Err(fail(
                    403,
                    "forbidden",
                    format!("a pod of {} asked for {app}'s artifacts", who.app),
                ));
            }
            let ask: ReadUrls = body(req)?;
            let prefix = read_prefix(&app);
            let signer =
                signer(state, &app).map_err(|e| fail(503, "unavailable", format!("{e:#}")))?;
            let urls = ask
                .keys
                .iter()
                .map(|k| {
                    if !k.starts_with(&prefix) || k.contains("..") {
                        return Err(fail(
                            403,
                            "forbidden",
                            format!("{k} is not one of {app}'s objects ({prefix}…)"),
                        ));
                    }
                    signer
                        .presign_get(k, URL_TTL)
                        .map_err(|e| fail(503, "unavailable", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            ok(serde_json::to_value(Urls {
                urls,
                expires_in_secs: URL_TTL.as_secs(),
            })
            .expect("serialises"))
        }
        _ => Err(fail(404, "not-found", format!("no route {method} {path}"))),
    }
}

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv("authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer ").map(str::to_string))
}

fn admin(state: &State, req: &Request) -> Result<(), Fail> {
    match bearer(req) {
        Some(t) if is_admin(&t, &state.admin) => Ok(()),
        Some(_) => Err(fail(401, "unauthenticated", "the admin token is wrong")),
        None => Err(fail(401, "unauthenticated", "no bearer token")),
    }
}

fn pod(state: &State, req: &Request) -> Result<Identity, Fail> {
    let token = bearer(req).ok_or_else(|| fail(401, "unauthenticated", "no bearer token"))?;
    state.verifier.identify(&token, &state.admin).map_err(|e| {
        if e.downcast_ref::<Refused>().is_some() {
            fail(401, "unauthenticated", e)
        } else {
            fail(503, "unavailable", format!("{e:#}"))
        }
    })
}

fn app_name(s: &str) -> Result<AppName, Fail> {
    AppName::parse(s).map_err(|e| fail(400, "bad-request", e))
}

fn body<T: serde::de::DeserializeOwned>(req: &mut Request) -> Result<T, Fail> {
    let mut buf = Vec::new();
    req.as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut buf)
        .map_err(|e| fail(400, "bad-request", format!("reading the body: {e}")))?;
    if buf.len() as u64 > MAX_BODY {
        return Err(fail(
            400,
            "bad-request",
            format!("the body is over {MAX_BODY} bytes"),
        ));
    }
    serde_json::from_slice(&buf).map_err(|e| {
        fail(
            400,
            "bad-request",
            format!("the body is not what this route takes: {e}"),
        )
    })
}

/// A record must describe the release it registers: its app and digest, as signed.
fn check_record(app: &AppName, r: &Register) -> Result<(), Fail> {
    let p: aether_artifact::provenance::Provenance =
        serde_json::from_str(&r.provenance).map_err(|e| {
            fail(
                400,
                "bad-request",
                format!("the provenance record is unreadable: {e}"),
            )
        })?;
    if p.app != app.as_str() || p.digest != r.digest {
        return Err(fail(
            400,
            "bad-request",
            format!(
                "the provenance record is for {} {}, not {app} {}",
                p.app,
                p.digest.short(),
                r.digest.short()
            ),
        ));
    }
    Ok(())
}

fn db_fail(e: anyhow::Error) -> Fail {
    fail(503, "database", format!("{e:#}"))
}

fn signer(state: &State, app: &AppName) -> Result<Arc<Store>> {
    let mut cache = state.signers.lock().unwrap();
    if let Some(s) = cache.get(app) {
        return Ok(s.clone());
    }
    let mut cfg = state.store.clone();
    if state.derive_read_keys {
        let (ak, sk) = read_credentials(app, &cfg.secret_key);
        cfg.access_key = ak;
        cfg.secret_key = sk;
    }
    let store = Arc::new(Store::new(cfg).context("configuring the store client")?);
    cache.insert(app.clone(), store.clone());
    Ok(store)
}

/// The listener: `addr` like `0.0.0.0:8090` or `127.0.0.1:0`.
pub fn listen(addr: &str) -> Result<Arc<tiny_http::Server>> {
    tiny_http::Server::http(addr)
        .map(Arc::new)
        .map_err(|e| anyhow!("listening on {addr}: {e}; another process may hold the port"))
}
