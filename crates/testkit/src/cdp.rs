//! The Chrome DevTools Protocol, as the tests speak it: to a headless Debian `chromium` (the
//! live page) and to node's inspector (`cargo xtask debug`). A blocking WebSocket (tungstenite)
//! and JSON; `Runtime.evaluate` is all the tests need.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

pub struct Cdp {
    ws: WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Cdp {
    /// Connects to a target's `webSocketDebuggerUrl`.
    pub fn connect(url: &str) -> Result<Cdp, String> {
        let (ws, _) = tungstenite::connect(url).map_err(|e| format!("connecting to {url}: {e}"))?;
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            // A wedged target fails the test instead of hanging it.
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        }
        Ok(Cdp { ws, next: 1 })
    }

    /// One command and its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::text(msg))
            .map_err(|e| format!("{method}: {e}"))?;
        loop {
            let m = self.ws.read().map_err(|e| format!("{method}: {e}"))?;
            let Message::Text(t) = m else { continue };
            let v: Value =
                serde_json::from_str(t.as_str()).map_err(|e| format!("{method}: {e}"))?;
            if v["id"] != id {
                continue;
            }
            if !v["error"].is_null() {
                return Err(format!("{method}: {}", v["error"]));
            }
            return Ok(v["result"].clone());
        }
    }

    /// The value of a JavaScript expression (awaited when it is a promise).
    pub fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if !r["exceptionDetails"].is_null() {
            return Err(format!("{expr}: {}", r["exceptionDetails"]));
        }
        Ok(r["result"]["value"].clone())
    }
}

/// The targets an inspector lists at `http://<addr>/json/list`.
pub fn targets(addr: &str) -> Result<Vec<Value>, String> {
    let url = format!("http://{addr}/json/list");
    let r = attohttpc::get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .map_err(|e| format!("{url}: {e}"))?;
    let body = r.text().map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_str(&body).map_err(|e| format!("{url}: {e}: {body}"))
}

/// Debian's chromium, headless, with its DevTools on a loopback port; killed on drop.
pub struct Browser {
    child: Child,
    /// `127.0.0.1:<port>` of its DevTools.
    pub addr: String,
    _profile: tempfile::TempDir,
}

/// The chromium binary, when installed.
pub fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Browser {
    /// Opens `url` in a new headless chromium.
    pub fn open(bin: &Path, url: &str) -> Result<Browser, String> {
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .args([
                "--headless",
                // The sandbox needs user namespaces, which a root CI job in a container lacks.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut said = String::new();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                return Err(format!(
                    "chromium exited before its DevTools listened:\n{said}"
                ));
            };
            if let Some(ws) = line.strip_prefix("DevTools listening on ws://") {
                break ws.split('/').next().unwrap_or_default().to_string();
            }
            said.push_str(&line);
            said.push('\n');
        };
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Browser {
            child,
            addr,
            _profile: profile,
        })
    }

    /// The DevTools session of the page showing `url`.
    pub fn page(&self, url: &str) -> Result<Cdp, String> {
        let found = crate::wait_until("the page in chromium", crate::PATIENCE, || {
            let t = targets(&self.addr).unwrap_or_default();
            let page = t.into_iter().find(|t| {
                t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
            });
            match page {
                Some(p) => Ok(p["webSocketDebuggerUrl"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()),
                None => Err("no page yet"),
            }
        });
        Cdp::connect(&found)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
