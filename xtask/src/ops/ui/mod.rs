//! `cargo xtask ui` and `dev --ui`: a live page on 127.0.0.1 showing every pod, every reload's
//! waterfall, the merged logs, and buttons for what the CLI does. One blocking HTTP server
//! (tiny_http, already the fetcher's) with server-sent events; the page is three files
//! embedded in the binary, plain HTML, CSS and JavaScript, with no build step.

mod hub;
mod routes;
mod watch;

use std::sync::Arc;

use aether_artifact::AppName;
use anyhow::{anyhow, Result};
use xshell::Shell;

use crate::config::Global;
use crate::targets::{Kind, Target, TargetArgs};
pub use hub::Hub;
pub use watch::reload_event;

/// Opens the target in each of the page's threads (a target belongs to one thread's shell).
#[derive(Clone)]
pub struct Opener {
    pub args: TargetArgs,
    pub global: Global,
    pub kind: Kind,
}

impl Opener {
    /// For `kind` in `namespace` (a cluster's; the local target ignores it), the default context.
    pub fn new(kind: Kind, namespace: &str, global: Global) -> Opener {
        Opener {
            args: TargetArgs {
                target: Some(kind),
                context: None,
                namespace: namespace.into(),
            },
            global,
            kind,
        }
    }

    pub fn open<'a>(&self, sh: &'a Shell) -> Box<dyn Target + 'a> {
        self.args.open_kind(sh, &self.global, self.kind)
    }
}

/// A running page.
pub struct Page {
    pub url: String,
    pub hub: Arc<Hub>,
    server: std::thread::JoinHandle<()>,
}

impl Page {
    /// Serves until the process ends.
    pub fn serve_forever(self) -> Result<()> {
        self.server
            .join()
            .map_err(|_| anyhow!("the page's server stopped"))
    }
}

/// Starts the page for `apps` on `port` (0: any free one) and the loops that feed it.
pub fn start(open: Opener, apps: &[AppName], port: u16) -> Result<Page> {
    let server = tiny_http::Server::http(("127.0.0.1", port))
        .map_err(|e| anyhow!("listening on 127.0.0.1:{port}: {e} (pick another with --port)"))?;
    let port = server
        .server_addr()
        .to_ip()
        .map(|a| a.port())
        .ok_or_else(|| anyhow!("the page's server has no TCP address"))?;
    let hub = Arc::new(Hub::default());
    let shared = Arc::new(routes::Shared {
        hub: hub.clone(),
        open: open.clone(),
        token: crate::config::random_hex(16)?,
        port,
    });
    for app in apps {
        let feeds: [(&str, Option<bool>); 3] = [
            ("fleet", None),
            ("app log", Some(false)),
            ("fetcher log", Some(true)),
        ];
        for (what, logs) in feeds {
            let (hub, open, app) = (hub.clone(), open.clone(), app.clone());
            std::thread::spawn(move || {
                let r = match logs {
                    None => watch::fleet(&hub, &open, &app),
                    Some(fetcher) => watch::logs(&hub, &open, &app, fetcher),
                };
                if let Err(e) = r {
                    eprintln!("ui: the {what} of {app} stopped: {e:#}");
                }
            });
        }
    }
    let server = std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let shared = shared.clone();
            // One thread per request: an event stream holds its thread for as long as the page
            // is open, and a button's reload waits for the pods.
            std::thread::spawn(move || routes::handle(req, &shared));
        }
    });
    Ok(Page {
        url: format!("http://127.0.0.1:{port}/"),
        hub,
        server,
    })
}

/// The apps the page shows: the one named, else every app the control plane knows.
pub fn apps(t: &dyn Target, app: Option<AppName>) -> Result<Vec<AppName>> {
    if let Some(a) = app {
        return Ok(vec![a]);
    }
    let Some(c) = t.control()? else {
        anyhow::bail!("name the app: `cargo xtask ui <app>` (with no control plane the page cannot list apps)");
    };
    let apps: Vec<AppName> = c
        .apps()?
        .into_iter()
        .filter_map(|a| AppName::parse(&a.app).ok())
        .collect();
    if apps.is_empty() {
        anyhow::bail!("no app has been uploaded yet: run `cargo xtask deploy-sample demo`");
    }
    Ok(apps)
}

/// `--ui` as every command that offers it spells it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct UiArgs {
    /// Port of the page on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, env = "AETHER_UI_PORT", default_value_t = 0)]
    pub ui_port: u16,
}

impl TargetArgs {
    /// The [`Opener`] for the page's threads, with the kind resolved (and printed) once.
    pub fn opener(&self, sh: &Shell, global: &Global) -> Opener {
        Opener {
            args: self.clone(),
            global: global.clone(),
            kind: self.resolve(sh),
        }
    }
}
