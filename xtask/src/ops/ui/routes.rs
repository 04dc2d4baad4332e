//! The page's HTTP side: the embedded assets, the event stream, and the two actions. Only this
//! machine's browser may use it: the server listens on 127.0.0.1, refuses a `Host` that is not
//! its own (DNS rebinding), and every request but the page itself must carry the token that
//! only the page's own HTML holds (another site can send requests but cannot read that page).

use std::io::{Read, Write};
use std::time::Duration;

use aether_artifact::{AppName, Digest};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response};
use xshell::Shell;

use super::watch::{releases, reload_event};
use super::{Hub, Opener};
use crate::ops::reload::{self, CutoverArgs};

const INDEX: &str = include_str!("assets/index.html");
const JS: &str = include_str!("assets/app.js");
const CSS: &str = include_str!("assets/app.css");
/// How long a button's reload may take before it reports a failure (as `--wait 60`).
const WAIT: Duration = Duration::from_secs(60);

pub struct Shared {
    pub hub: std::sync::Arc<Hub>,
    pub open: Opener,
    pub token: String,
    pub port: u16,
}

pub fn handle(mut req: Request, s: &Shared) {
    let answer = route(&mut req, s);
    let _ = match answer {
        Ok(Answer::Stream) => return stream(req, s),
        Ok(Answer::Body(ctype, body)) => req.respond(reply(200, ctype, body)),
        Ok(Answer::Json(code, v)) => req.respond(reply(code, "application/json", v.to_string())),
        Err(e) => req.respond(reply(
            400,
            "application/json",
            json!({"error": format!("{e:#}")}).to_string(),
        )),
    };
}

enum Answer {
    Body(&'static str, String),
    Json(u16, Value),
    Stream,
}

fn route(req: &mut Request, s: &Shared) -> Result<Answer> {
    let host = header(req, "Host").unwrap_or_default();
    if host != format!("127.0.0.1:{}", s.port) && host != format!("localhost:{}", s.port) {
        return Ok(Answer::Json(
            421,
            json!({"error": "wrong host: open the printed address"}),
        ));
    }
    let (path, query) = req.url().split_once('?').unwrap_or((req.url(), ""));
    let path = path.to_string();
    let authorized = header(req, "X-Aether-Token").as_deref() == Some(s.token.as_str())
        || query == format!("token={}", s.token);
    match (req.method(), path.as_str()) {
        (Method::Get, "/") => Ok(Answer::Body(
            "text/html; charset=utf-8",
            INDEX.replace("{{TOKEN}}", &s.token),
        )),
        (Method::Get, "/app.js") => Ok(Answer::Body("text/javascript", JS.into())),
        (Method::Get, "/app.css") => Ok(Answer::Body("text/css", CSS.into())),
        _ if !authorized => Ok(Answer::Json(
            403,
            json!({"error": "missing token: reload the page"}),
        )),
        (Method::Get, "/events") => Ok(Answer::Stream),
        (Method::Post, "/api/hot-patch" | "/api/rollback") => {
            let mut body = String::new();
            req.as_reader()
                .take(64 * 1024)
                .read_to_string(&mut body)
                .context("reading the request")?;
            let v: Value = serde_json::from_str(&body).context("the request is not JSON")?;
            Ok(match act(&path, &v, s) {
                Ok(v) => Answer::Json(200, v),
                Err(e) => Answer::Json(409, json!({"error": format!("{e:#}")})),
            })
        }
        _ => Ok(Answer::Json(404, json!({"error": "no such page"}))),
    }
}

/// A button: the same operation as the CLI's `hot-patch --wait 60` or `rollback --to --wait 60`.
fn act(path: &str, v: &Value, s: &Shared) -> Result<Value> {
    let app = AppName::parse(v["app"].as_str().unwrap_or_default()).map_err(|e| anyhow!("{e}"))?;
    let digest = match v["digest"].as_str() {
        Some(d) => Some(Digest::parse(d).map_err(|e| anyhow!("{e}"))?),
        None => None,
    };
    let sh = Shell::new()?;
    let t = s.open.open(&sh);
    let args = CutoverArgs {
        stage_timeout: 60,
        ..Default::default()
    };
    let (source, outcome) = if path == "/api/rollback" {
        (
            "rollback",
            reload::rollback(&*t, &app, digest, Some(WAIT), &args)?,
        )
    } else {
        let d = match digest {
            Some(d) => d,
            None => latest_upload(&*t, &app)?,
        };
        ("hot-patch", reload::patch(&*t, &app, d, Some(WAIT), &args)?)
    };
    let Some(o) = outcome else {
        return Ok(json!({"changed": false, "message": "already serving it: nothing to do"}));
    };
    if let Some(tr) = &o.trace {
        s.hub.send("reload", reload_event(&app, source, tr));
    }
    releases(&s.hub, &*t, &app);
    let d = o
        .published
        .release
        .digest
        .map(|d| d.short())
        .unwrap_or_default();
    Ok(json!({
        "changed": true,
        "generation": o.published.release.generation,
        "message": format!("{source}: generation {} serves {d}", o.published.release.generation),
    }))
}

/// The newest upload the history knows.
fn latest_upload(t: &dyn crate::targets::Target, app: &AppName) -> Result<Digest> {
    let cur = t.release(app)?.unwrap_or_default();
    let (list, source) =
        crate::ops::registry::recent(t.control()?.as_ref(), &t.store()?, app, &cur)?;
    // Only the control plane's history orders uploads; the release history lists releases.
    let newest = list
        .iter()
        .filter(|r| r.seq.is_some())
        .max_by_key(|r| r.seq);
    match newest {
        Some(r) => Ok(r.digest),
        None if source != "control-plane" => bail!(
            "without a control plane the page cannot tell the latest upload: choose a release,              or run `cargo xtask hot-patch {app} <digest>`"
        ),
        None => bail!("{app} has no upload yet: run `cargo xtask hot-upload {app} <dir>`"),
    }
}

/// Server-sent events: everything the hub holds, then each new event, until the page goes.
fn stream(req: Request, s: &Shared) {
    let (first, rx) = s.hub.subscribe();
    let mut w = req.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";
    if w.write_all(head.as_bytes()).is_err() {
        return;
    }
    for f in first {
        if w.write_all(f.as_bytes()).is_err() {
            return;
        }
    }
    loop {
        if w.flush().is_err() {
            return;
        }
        let f = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(f) => f,
            // A comment line: finds a page that went away.
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => ": still here\n\n".to_string(),
            Err(_) => return,
        };
        if w.write_all(f.as_bytes()).is_err() {
            return;
        }
    }
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

fn reply(code: u16, ctype: &str, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    let h = |k: &str, v: &str| Header::from_bytes(k, v).expect("a valid header");
    Response::from_string(body)
        .with_status_code(code)
        .with_header(h("Content-Type", ctype))
        .with_header(h("Cache-Control", "no-store"))
        .with_header(h("X-Content-Type-Options", "nosniff"))
        .with_header(h(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'",
        ))
}
