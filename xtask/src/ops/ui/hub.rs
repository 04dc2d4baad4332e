//! What the page shows, kept in one place: the latest of each kind of news, replayed to a page
//! that connects, and every new piece sent to the pages already connected (server-sent events).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{mpsc, Mutex};

use serde_json::Value;

/// Reloads kept per app, and log lines kept in all.
pub const RELOADS: usize = 20;
pub const LOG_LINES: usize = 1000;

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per app: its latest `fleet` and `releases`.
    fleet: BTreeMap<String, Value>,
    releases: BTreeMap<String, Value>,
    /// Newest last; one per (app, generation): a richer trace of the same reload replaces one.
    reloads: VecDeque<Value>,
    logs: VecDeque<Value>,
    subscribers: Vec<mpsc::Sender<String>>,
}

/// One server-sent event.
fn frame(kind: &str, data: &Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

impl Hub {
    /// What a page that connects now is sent first, and the channel of what follows.
    pub fn subscribe(&self) -> (Vec<String>, mpsc::Receiver<String>) {
        let mut g = self.inner.lock().unwrap();
        let mut first: Vec<String> = Vec::new();
        first.extend(g.fleet.values().map(|v| frame("fleet", v)));
        first.extend(g.releases.values().map(|v| frame("releases", v)));
        first.extend(g.reloads.iter().map(|v| frame("reload", v)));
        first.extend(g.logs.iter().map(|v| frame("log", v)));
        let (tx, rx) = mpsc::channel();
        g.subscribers.push(tx);
        (first, rx)
    }

    /// Records `data` as the latest of its kind and sends it to every connected page.
    pub fn send(&self, kind: &str, data: Value) {
        let mut g = self.inner.lock().unwrap();
        let app = data["app"].as_str().unwrap_or_default().to_string();
        match kind {
            "fleet" => {
                if g.fleet.get(&app) == Some(&data) {
                    return; // nothing changed: no event
                }
                g.fleet.insert(app, data.clone());
            }
            "releases" => {
                g.releases.insert(app, data.clone());
            }
            "reload" => {
                let same =
                    |v: &Value| v["app"] == data["app"] && v["generation"] == data["generation"];
                if let Some(old) = g.reloads.iter_mut().find(|v| same(v)) {
                    // The command's own trace (with its save, pack and upload) beats one the page
                    // pieced together from the pods.
                    if old["source"] != "observed" && data["source"] == "observed" {
                        return;
                    }
                    *old = data.clone();
                } else {
                    g.reloads.push_back(data.clone());
                    let of_app = g.reloads.iter().filter(|v| v["app"] == data["app"]).count();
                    if of_app > RELOADS {
                        let i = g.reloads.iter().position(|v| v["app"] == data["app"]);
                        g.reloads.remove(i.unwrap_or(0));
                    }
                }
            }
            "log" => {
                g.logs.push_back(data.clone());
                if g.logs.len() > LOG_LINES {
                    g.logs.pop_front();
                }
            }
            _ => {}
        }
        let f = frame(kind, &data);
        g.subscribers.retain(|s| s.send(f.clone()).is_ok());
    }

    /// The reload of `app` at `generation` already has a trace (observed or the command's).
    pub fn has_reload(&self, app: &str, generation: u64) -> bool {
        let g = self.inner.lock().unwrap();
        g.reloads
            .iter()
            .any(|v| v["app"] == app && v["generation"] == generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_gets_the_state_then_the_news_and_a_command_trace_wins() {
        let hub = Hub::default();
        hub.send("fleet", json!({"app": "demo", "pods": 1}));
        hub.send(
            "reload",
            json!({"app": "demo", "generation": 2, "source": "hot-patch"}),
        );
        hub.send(
            "reload",
            json!({"app": "demo", "generation": 2, "source": "observed"}),
        );
        let (first, rx) = hub.subscribe();
        assert_eq!(first.len(), 2);
        assert!(first[1].contains("\"source\":\"hot-patch\""), "{first:?}");
        hub.send("fleet", json!({"app": "demo", "pods": 1}));
        hub.send("fleet", json!({"app": "demo", "pods": 2}));
        assert_eq!(
            rx.try_recv().unwrap(),
            "event: fleet\ndata: {\"app\":\"demo\",\"pods\":2}\n\n"
        );
        assert!(rx.try_recv().is_err(), "an unchanged fleet is no news");
        for g in 0..30 {
            hub.send(
                "reload",
                json!({"app": "demo", "generation": 10 + g, "source": "observed"}),
            );
        }
        assert_eq!(hub.subscribe().0.len(), 1 + RELOADS);
        assert!(hub.has_reload("demo", 39) && !hub.has_reload("demo", 2));
    }
}
