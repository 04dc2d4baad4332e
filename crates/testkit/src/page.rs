//! The live page (`cargo xtask ui`) as a script sees it: its token (only its own HTML holds
//! it) and its server-sent events, read over a plain socket as a browser's EventSource reads
//! them.

use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The page's token.
pub fn token(url: &str) -> Result<String, String> {
    let html = attohttpc::get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .and_then(|r| r.text())
        .map_err(|e| format!("{url}: {e}"))?;
    html.split("name=\"aether-token\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(str::to_string)
        .ok_or_else(|| format!("no token in {html}"))
}

/// Every event of the page's stream as `(kind, data)`, on a channel, until the page goes.
pub fn events(url: &str, token: &str) -> Result<mpsc::Receiver<(String, Value)>, String> {
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = std::net::TcpStream::connect(&host).map_err(|e| format!("{host}: {e}"))?;
    write!(
        s,
        "GET /events?token={token} HTTP/1.1\r\nHost: {host}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kind = String::new();
        for line in BufReader::new(s).lines().map_while(Result::ok) {
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v = serde_json::from_str(d).unwrap_or(Value::Null);
                if tx.send((kind.clone(), v)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// The next event of `kind` for which `pick` gives a value, within `within`.
pub fn next<T>(
    rx: &mpsc::Receiver<(String, Value)>,
    kind: &str,
    within: Duration,
    mut pick: impl FnMut(&Value) -> Option<T>,
) -> Result<T, String> {
    let deadline = std::time::Instant::now() + within;
    let mut last = Value::Null;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((k, v)) if k == kind => match pick(&v) {
                Some(t) => return Ok(t),
                None => last = v,
            },
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "no such {kind} event within {within:?}; last: {last}"
                ))
            }
        }
    }
}
