//! The supervisor's loop: one event at a time (signals, the trigger, a process listening,
//! timeouts), each followed by the saved status.

use std::fs;
use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;

use aether_artifact::{trigger, volume, RunnerStatus};
use anyhow::{bail, Context, Result};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};

use super::posix::*;
use super::*;

impl Supervisor {
    pub(super) fn start(cfg: RunConfig) -> Result<Supervisor> {
        if cfg.command.is_empty() {
            bail!("no command: use `aether-run --listen :3000 -- node server.js`");
        }
        become_subreaper();
        let (tx, rx) = mpsc::channel();
        let mut signals = Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT])
            .context("installing signal handlers")?;
        let stx = tx.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for s in signals.forever() {
                    if stx.send(Ev::Signal(s)).is_err() {
                        break;
                    }
                }
            })?;
        let watcher = cfg
            .watch
            .as_deref()
            .map(|dir| watch(dir, tx.clone()))
            .transpose()?;
        let mut s = Supervisor {
            cfg,
            tx,
            rx,
            shared: Arc::default(),
            live: None,
            starting: None,
            draining: Vec::new(),
            spare: None,
            socket: None,
            listening: false,
            stopping: false,
            next_id: 0,
            crash_streak: 0,
            failed: None,
            seen: None,
            status: RunnerStatus::default(),
            exit: None,
            _watcher: watcher,
        };
        if s.node_flags().is_some() {
            s.socket = Some(bind_unlistened(&s.listen_addr()?)?);
        }
        s.note_trigger();
        let release = s.seen.as_ref().map(|(l, _)| l.clone());
        s.launch(release);
        s.save();
        Ok(s)
    }

    pub(super) fn run(mut self) -> Result<ExitCode> {
        while let Ok(ev) = self.rx.recv() {
            match ev {
                Ev::Signal(SIGCHLD) => self.reaped(),
                Ev::Signal(SIGHUP) => {
                    if let Some(l) = &self.live {
                        signal_group(l.pid, SIGHUP);
                    }
                }
                Ev::Signal(sig) => self.stop(sig),
                Ev::Trigger => {
                    self.note_trigger();
                    self.maybe_switch();
                }
                Ev::Listening { id, addr } => self.listening(id, addr)?,
                Ev::StartTimeout { id } => {
                    if self.starting.as_ref().is_some_and(|p| p.id == id) {
                        let t = self.cfg.start_timeout;
                        let why = format!("did not listen on its PORT within {t:?}");
                        self.start_failed(why, false);
                    }
                }
                Ev::ListensElsewhere { id, port, ports } => {
                    if self.starting.as_ref().is_some_and(|p| p.id == id) {
                        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                        let why = format!(
                            "listens on port {}, not on its PORT ({port}): listen on process.env.PORT, or set \"aether\": {{\"port\": {}}} in package.json",
                            list.join(", "),
                            ports[0]
                        );
                        self.start_failed(why, false);
                    }
                }
                Ev::Drained { id } => {
                    if let Some(p) = self.draining.iter().find(|p| p.id == id) {
                        signal_group(p.pid, SIGTERM);
                        self.kill_later(Some(p.pid));
                    }
                }
                Ev::Restart => {
                    if !self.stopping && self.live.is_none() && self.starting.is_none() {
                        let release = self.seen.as_ref().map(|(l, _)| l.clone());
                        self.launch(release);
                    }
                }
                Ev::KillAll => {
                    for pid in self.pids() {
                        signal_group(pid, libc::SIGKILL);
                    }
                }
            }
            self.save();
            if self.stopping && self.pids().is_empty() {
                return Ok(self.exit.unwrap_or(ExitCode::SUCCESS));
            }
        }
        bail!("the supervisor's event channel closed")
    }

    pub(super) fn pids(&self) -> Vec<libc::pid_t> {
        self.live
            .iter()
            .chain(&self.starting)
            .chain(&self.draining)
            .map(|p| p.pid)
            .chain(self.spare.as_ref().map(|s| s.pid))
            .collect()
    }

    pub(super) fn note_trigger(&mut self) {
        let Some(dir) = &self.cfg.watch else { return };
        let Ok(line) = fs::read_to_string(dir.join(trigger_name())) else {
            return;
        };
        if trigger::parse(&line).is_none() {
            return;
        }
        if self.seen.as_ref().is_none_or(|(l, _)| *l != line) {
            self.seen = Some((line, unix_now_ms()));
        }
    }

    pub(super) fn save(&mut self) {
        self.status.standby_pid = self.spare.as_ref().map(|s| s.pid as u32);
        let Some(path) = &self.cfg.status_file else {
            return;
        };
        let tmp = path.with_extension("tmp");
        let r = serde_json::to_vec_pretty(&self.status)
            .map_err(io::Error::other)
            .and_then(|b| fs::write(&tmp, b))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = r {
            log!("cannot write the status to {}: {e}", path.display());
        }
    }
}

pub(super) fn describe_release(line: Option<&str>) -> String {
    match line.and_then(trigger::parse) {
        Some((d, g)) => format!("{} (generation {g})", d.short()),
        None => "the app".into(),
    }
}

pub(super) fn trigger_name() -> &'static Path {
    Path::new(volume::RELOAD_TRIGGER)
        .file_name()
        .map(Path::new)
        .expect("the trigger has a file name")
}

/// Wakes the supervisor on every change in the trigger's directory. Not on reads: notify
/// reports opens too, and reading the trigger after each wake would wake it again, for ever.
pub(super) fn watch(dir: &Path, tx: Sender<Ev>) -> Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    fs::create_dir_all(dir).ok();
    let mut w = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if e.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(Ev::Trigger);
        }
    })
    .context("starting the trigger watcher")?;
    w.watch(dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {} (--watch)", dir.display()))?;
    Ok(w)
}
