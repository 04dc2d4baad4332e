//! `aether-run`: the app container's PID 1 and its zero-downtime supervisor.
//!
//! It ships inside the fetcher's static binary (one image): the fetcher copies itself to
//! `<root>/.aether/bin/aether-run` at start, and the app container runs it from the shared
//! volume, so the stock node image stays untouched.
//!
//! With `--listen`, it owns the app's public port:
//! - for a node command, the socket is bound but not listening, and every node process inherits
//!   it; `loader.js` makes the app's `listen(PORT)` listen on it, so node accepts connections
//!   itself (nothing copied on the way), and they queue while no process listens;
//! - for any other command (or `--warm false`), each process gets a private `PORT` and each
//!   accepted connection is forwarded to the live one (a connection that arrives while none
//!   listens waits for one, up to `--start-timeout`, instead of being refused);
//! - when the fetcher rewrites the trigger in `--watch` (inotify, no debounce), a new process
//!   starts beside the old one; once it listens, the old one stops taking connections (SIGUSR2
//!   to its loader, which closes the app's server; or the forwarder sends new connections to
//!   the new one) and finishes those it has (at most `--drain`), then gets SIGTERM and,
//!   `--grace` later, SIGKILL;
//! - a new process that exits or does not listen within `--start-timeout` is killed and the old
//!   one keeps serving; the failure goes to `--status-file`, which the fetcher reports;
//! - a live process that exits is restarted with capped backoff inside the container (no
//!   container restart, no CrashLoopBackOff).
//!
//! Either way it is a proper init: each app process runs in its own process group, stop signals
//! go to every group, what is left `--grace` after the first one is killed, and every child,
//! orphans of the app included (it is a child subreaper), is reaped.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use aether_artifact::{app, trigger, volume, RunState, RunnerStatus};
use anyhow::{bail, Context, Result};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::state::{now_rfc3339, unix_now_ms};

macro_rules! log {
    ($($t:tt)*) => { eprintln!("[aether-run] {}", format!($($t)*)) };
}

pub struct RunConfig {
    pub command: Vec<OsString>,
    /// How long the app has to exit after the first stop signal before it is killed.
    pub grace: Duration,
    /// The public address; `None` runs the command once, as a plain init.
    pub listen: Option<String>,
    /// The directory holding the fetcher's reload trigger.
    pub watch: Option<PathBuf>,
    pub status_file: Option<PathBuf>,
    pub start_timeout: Duration,
    pub drain: Duration,
    /// Keep a booted `node` waiting to load the entry point (see [`Spare`]).
    pub warm: bool,
    /// A release directory (`current`) whose record names the entry point and its arguments,
    /// appended to the command at each start.
    pub entry_from: Option<PathBuf>,
}

pub fn run(cfg: RunConfig) -> ExitCode {
    let r = if cfg.listen.is_some() {
        Supervisor::start(cfg).and_then(Supervisor::run)
    } else {
        init(cfg)
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            log!("{e:#}");
            ExitCode::from(127)
        }
    }
}

/// Without `--listen`: run the command once, forward stop signals, reap, exit with its status.
fn init(cfg: RunConfig) -> Result<ExitCode> {
    let Some((prog, args)) = cfg.command.split_first() else {
        bail!("no command: use `aether-run -- node server.js`");
    };
    become_subreaper();
    // Registered before the spawn, so a child that dies at once is still seen.
    let mut signals = Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT])
        .context("installing signal handlers")?;
    let child = Command::new(prog)
        .args(args)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", prog.to_string_lossy()))?;
    let pgid = child.id() as libc::pid_t;
    // Reaped below with waitpid(-1), together with orphans; `Child` is not used to wait.
    drop(child);
    let mut stopping = false;
    for sig in signals.forever() {
        if sig == SIGCHLD {
            for (pid, status) in reap_all() {
                if pid == pgid {
                    // Whatever the command left behind in its group goes with it.
                    signal_group(pgid, libc::SIGKILL);
                    return Ok(exit_code(status));
                }
            }
            continue;
        }
        signal_group(pgid, sig);
        if !stopping && sig != SIGHUP {
            stopping = true;
            let grace = cfg.grace;
            thread::spawn(move || {
                thread::sleep(grace);
                log!("the app did not exit {grace:?} after the stop signal; killing it");
                signal_group(pgid, libc::SIGKILL);
            });
        }
    }
    unreachable!("Signals::forever never ends")
}

// --- the supervisor ---------------------------------------------------------------------------

enum Ev {
    Signal(i32),
    Trigger,
    Listening { id: u64, addr: SocketAddr },
    StartTimeout { id: u64 },
    Drained { id: u64 },
    Restart,
    KillAll,
}

/// One app process (and its process group).
struct Proc {
    id: u64,
    pid: libc::pid_t,
    port: u16,
    /// The trigger line it was started on.
    release: Option<String>,
    started: Instant,
    /// Open connections forwarded to it.
    conns: Arc<AtomicUsize>,
    /// Tells its start-up prober to stop.
    gone: Arc<AtomicBool>,
}

/// A `node` that has booted and waits on its stdin before it loads the entry point: a switch then
/// costs loading the app, not node's own start (~100 ms of a ~130 ms cold start here). The
/// entry point is resolved when it loads, so `current/…` is the release of that moment, and
/// the app sees what a plain `node current/server.js` sees (`require.main`, `process.argv`).
/// Only for `node [flags…] <entry>`; `--warm false` turns it off.
struct Spare {
    id: u64,
    pid: libc::pid_t,
    port: u16,
    stdin: std::process::ChildStdin,
}

const LOADER: &str = include_str!("loader.js");

struct Backend {
    id: u64,
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

/// What the forwarding threads read: the live process, and a condvar for connections that
/// wait while there is none.
#[derive(Default)]
struct Shared {
    backend: Mutex<Option<Backend>>,
    changed: Condvar,
}

struct Supervisor {
    cfg: RunConfig,
    tx: Sender<Ev>,
    rx: mpsc::Receiver<Ev>,
    shared: Arc<Shared>,
    live: Option<Proc>,
    starting: Option<Proc>,
    draining: Vec<Proc>,
    spare: Option<Spare>,
    /// With node: the public socket, bound but not listening until the first app process
    /// listens on it; every app process accepts from it (see `loader.js`). Without: `None`, and
    /// the forwarder carries each connection to the live process's private port.
    socket: Option<(OwnedFd, SocketAddr)>,
    listening: bool,
    stopping: bool,
    next_id: u64,
    crash_streak: u32,
    /// The trigger line whose process failed to start: not retried until the trigger changes.
    failed: Option<String>,
    /// The last trigger line seen, and when (unix ms).
    seen: Option<(String, u64)>,
    status: RunnerStatus,
    exit: Option<ExitCode>,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// A process that lived this long before it exited starts a fresh backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Supervisor {
    fn start(cfg: RunConfig) -> Result<Supervisor> {
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

    fn run(mut self) -> Result<ExitCode> {
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

    fn pids(&self) -> Vec<libc::pid_t> {
        self.live
            .iter()
            .chain(&self.starting)
            .chain(&self.draining)
            .map(|p| p.pid)
            .chain(self.spare.as_ref().map(|s| s.pid))
            .collect()
    }

    /// The command for the next process: the configured one, and with `--entry-from` the
    /// release's entry point and arguments from its record, read now (a release without one
    /// starts `server.js`).
    fn command_now(&self) -> Vec<OsString> {
        let mut c = self.cfg.command.clone();
        if let Some(dir) = &self.cfg.entry_from {
            let (entry, args) = match app::Release::read(dir) {
                Ok(Some(r)) => (r.entry, r.args),
                Ok(None) => (app::LEGACY_ENTRY.to_string(), Vec::new()),
                Err(e) => {
                    log!("{e}; starting {}", app::LEGACY_ENTRY);
                    (app::LEGACY_ENTRY.to_string(), Vec::new())
                }
            };
            c.push(dir.join(entry).into_os_string());
            c.extend(args.into_iter().map(OsString::from));
        }
        c
    }

    /// `(node, its flags)` when the command is `node [--flag…] …` and `--warm` is on.
    fn node_flags(&self) -> Option<(&OsString, Vec<&OsString>)> {
        let (prog, args) = self.cfg.command.split_first()?;
        let flags: Vec<&OsString> = args
            .iter()
            .take_while(|a| a.to_string_lossy().starts_with('-'))
            .collect();
        (self.cfg.warm && Path::new(prog).file_name() == Some("node".as_ref()))
            .then_some((prog, flags))
    }

    /// Boots the next process ahead of need, when there is none and the command allows it.
    fn spawn_spare(&mut self) {
        if self.stopping || self.spare.is_some() {
            return;
        }
        if let Err(e) = self.try_spawn_spare() {
            log!("cannot start a standby node: {e}");
        }
    }

    fn try_spawn_spare(&mut self) -> io::Result<()> {
        let Some((prog, flags)) = self.node_flags() else {
            return Ok(());
        };
        let mut cmd = Command::new(prog);
        cmd.args(flags)
            .arg("-e")
            .arg(LOADER)
            .stdin(std::process::Stdio::piped())
            .process_group(0);
        let id = self.next_id + 1;
        let (port, ready) = match &self.socket {
            Some((sock, addr)) => {
                // The child gets the socket as fd 3 and the ready pipe as fd 4: dup2 in the
                // child clears close-on-exec on exactly those two. Both sources sit at fd ≥ 10,
                // so neither dup2 overwrites the other.
                let (r, w) = ready_pipe()?;
                let (sock, w_fd) = (sock.as_raw_fd(), w.as_raw_fd());
                cmd.env("AETHER_RUN_FD", "3")
                    .env("PORT", addr.port().to_string());
                // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
                unsafe {
                    cmd.pre_exec(move || {
                        if libc::dup2(sock, 3) < 0 || libc::dup2(w_fd, 4) < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                (addr.port(), Some((r, w)))
            }
            None => {
                let port = free_port()?;
                cmd.env("PORT", port.to_string());
                (port, None)
            }
        };
        let mut c = cmd.spawn()?;
        if let Some((r, w)) = ready {
            // Our copy of the write end goes, so the reader sees EOF when the child dies.
            drop(w);
            let (tx, addr) = (self.tx.clone(), self.socket.as_ref().expect("shared").1);
            thread::spawn(move || {
                let mut line = String::new();
                let mut r = io::BufReader::new(fs::File::from(r));
                use io::BufRead as _;
                if r.read_line(&mut line).is_ok() && line == "listening\n" {
                    let _ = tx.send(Ev::Listening { id, addr });
                }
            });
        }
        self.next_id = id;
        self.spare = Some(Spare {
            id,
            pid: c.id() as libc::pid_t,
            port,
            stdin: c.stdin.take().expect("piped"),
        });
        Ok(())
    }

    /// Starts an app process on a fresh private port; a prober reports when it listens.
    fn launch(&mut self, release: Option<String>) {
        let command = self.command_now();
        if self.socket.is_some() && self.spare.is_none() {
            // Shared-socket mode starts every process through the loader: boot one now.
            self.spawn_spare();
        }
        let (id, pid, port) = match self.take_spare(&command) {
            Some(warm) => warm,
            None if self.socket.is_some() => {
                return self.launch_failed("cannot start node through the loader".into())
            }
            None => {
                let (prog, args) = command.split_first().expect("checked at start");
                let port = match free_port() {
                    Ok(p) => p,
                    Err(e) => return self.launch_failed(format!("no free port for the app: {e}")),
                };
                let child = Command::new(prog)
                    .args(args)
                    .env("PORT", port.to_string())
                    .process_group(0)
                    .spawn();
                match child {
                    Ok(c) => {
                        self.next_id += 1;
                        (self.next_id, c.id() as libc::pid_t, port)
                    }
                    Err(e) => {
                        let why = format!("cannot start {}: {e}", prog.to_string_lossy());
                        return self.launch_failed(why);
                    }
                }
            }
        };
        let p = Proc {
            id,
            pid,
            port,
            release,
            started: Instant::now(),
            conns: Arc::default(),
            gone: Arc::default(),
        };
        let (tx, id, gone) = (self.tx.clone(), p.id, p.gone.clone());
        let deadline = Instant::now() + self.cfg.start_timeout;
        if self.socket.is_some() {
            // The loader reports listening through its pipe; this only enforces the deadline.
            thread::spawn(move || {
                thread::sleep(deadline - Instant::now());
                let _ = tx.send(Ev::StartTimeout { id });
            });
        } else {
            self.probe(tx, id, gone, port, deadline);
        }
        if self.live.is_none() {
            self.status.state = RunState::Starting;
        }
        self.starting = Some(p);
    }

    /// Forwarder mode: connects to the new process's private port until it accepts.
    fn probe(&self, tx: Sender<Ev>, id: u64, gone: Arc<AtomicBool>, port: u16, deadline: Instant) {
        thread::spawn(move || {
            let addrs: [SocketAddr; 2] = [
                ([127, 0, 0, 1], port).into(),
                (std::net::Ipv6Addr::LOCALHOST, port).into(),
            ];
            while !gone.load(Ordering::Relaxed) {
                // The app may bind 0.0.0.0, :: or only one loopback family.
                for addr in addrs {
                    if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                        let _ = tx.send(Ev::Listening { id, addr });
                        return;
                    }
                }
                if Instant::now() > deadline {
                    let _ = tx.send(Ev::StartTimeout { id });
                    return;
                }
                thread::sleep(Duration::from_millis(2));
            }
        });
    }

    /// Tells the standby node to load `command`'s entry point now: `(pid, port)`. `None` (a
    /// cold start) when there is no standby or `command` is not its flags then an entry point.
    fn take_spare(&mut self, command: &[OsString]) -> Option<(u64, libc::pid_t, u16)> {
        use std::io::Write as _;
        let (_, flags) = self.node_flags()?;
        let rest = command.get(1 + flags.len()..).filter(|r| !r.is_empty())?;
        let mut sp = self.spare.take()?;
        let line: Vec<String> = rest
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut line = serde_json::to_vec(&line).expect("strings serialise");
        line.push(b'\n');
        // Dropping stdin after the line closes the pipe; the loader has its data by then.
        sp.stdin.write_all(&line).ok()?;
        Some((sp.id, sp.pid, sp.port))
    }

    fn launch_failed(&mut self, why: String) {
        log!("{why}");
        self.status.last_failure = Some(why);
        self.status.last_failure_at = Some(now_rfc3339());
        if self.live.is_none() {
            self.restart_later();
        }
    }

    /// The process of `id` accepts connections: it becomes the live one.
    fn listening(&mut self, id: u64, addr: SocketAddr) -> Result<()> {
        if self.starting.as_ref().is_none_or(|p| p.id != id) || self.stopping {
            return Ok(());
        }
        let p = self.starting.take().expect("checked");
        p.gone.store(true, Ordering::Relaxed);
        if self.socket.is_none() {
            *self.shared.backend.lock().unwrap() = Some(Backend {
                id: p.id,
                addr,
                conns: p.conns.clone(),
            });
            self.shared.changed.notify_all();
        }
        if !self.listening && self.socket.is_none() {
            // Bound only now, so a TCP readiness probe passes once the app really answers.
            self.bind()?;
        }
        let now = unix_now_ms();
        let parsed = p.release.as_deref().and_then(trigger::parse);
        let seen_at = self
            .seen
            .as_ref()
            .filter(|(l, _)| Some(l) == p.release.as_ref())
            .map(|(_, t)| *t);
        let (pid, port, release) = (p.pid, p.port, describe_release(p.release.as_deref()));
        let old = self.live.replace(p);
        let s = &mut self.status;
        s.state = RunState::Serving;
        s.pid = Some(pid as u32);
        s.port = Some(port);
        s.digest = parsed.map(|(d, _)| d);
        s.generation = parsed.map(|(_, g)| g);
        s.serving_since = Some(now_rfc3339());
        s.switched_at_ms = Some(now);
        s.seen_at_ms = seen_at;
        match old {
            Some(old) => {
                s.swaps += 1;
                s.last_failure = None;
                s.failed_digest = None;
                self.failed = None;
                let took = seen_at.map_or(String::new(), |t| {
                    format!(", {} ms after the trigger", now.saturating_sub(t))
                });
                log!(
                    "switched to {release}, pid {pid}, port {}{took}; pid {} drains",
                    addr.port(),
                    old.pid
                );
                self.drain(old);
            }
            None => log!("serving {release}, pid {pid}, port {}", addr.port()),
        }
        self.maybe_switch();
        if self.starting.is_none() {
            self.spawn_spare();
        }
        Ok(())
    }

    fn listen_addr(&self) -> Result<SocketAddr> {
        let spec = self.cfg.listen.as_deref().expect("supervisor mode");
        // `:3000` means every interface, as in Go and the fetcher's --http-bind.
        let spec = match spec.strip_prefix(':') {
            Some(port) => format!("[::]:{port}"),
            None => spec.to_string(),
        };
        spec.to_socket_addrs()
            .with_context(|| format!("--listen {spec}: use e.g. `:3000` or `127.0.0.1:3000`"))?
            .next()
            .with_context(|| format!("--listen {spec} names no address"))
    }

    fn bind(&mut self) -> Result<()> {
        let addr = self.listen_addr()?;
        let listener = TcpListener::bind(addr)
            .or_else(|e| match addr {
                // A node without IPv6 still serves IPv4.
                SocketAddr::V6(a) if a.ip().is_unspecified() => {
                    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
                }
                _ => Err(e),
            })
            .with_context(|| {
                format!("listening on {addr} (--listen): is another process on it?")
            })?;
        let shared = self.shared.clone();
        let hold = self.cfg.start_timeout;
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept(listener, shared, hold))?;
        self.listening = true;
        log!("listening on {addr}");
        Ok(())
    }

    /// Waits until the replaced process has no open connection (at most `--drain`), then stops
    /// it: a request in flight during a switch completes on the process that took it.
    fn drain(&mut self, old: Proc) {
        if self.socket.is_some() {
            // It stops accepting from the shared socket and finishes what it took; a process
            // with nothing else to do then exits by itself.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(old.pid, libc::SIGUSR2);
            }
        }
        let (tx, id, conns) = (self.tx.clone(), old.id, old.conns.clone());
        let deadline = Instant::now() + self.cfg.drain;
        let counted = self.socket.is_none();
        thread::spawn(move || {
            // Shared-socket mode counts no connections: the process has until the deadline.
            while (!counted || conns.load(Ordering::Acquire) > 0) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            let _ = tx.send(Ev::Drained { id });
        });
        self.draining.push(old);
    }

    fn kill_later(&self, pid: Option<libc::pid_t>) {
        let (grace, tx) = (self.cfg.grace, self.tx.clone());
        thread::spawn(move || {
            thread::sleep(grace);
            match pid {
                Some(pid) => signal_group(pid, libc::SIGKILL),
                None => {
                    let _ = tx.send(Ev::KillAll);
                }
            }
        });
    }

    fn note_trigger(&mut self) {
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

    /// Starts a process on the newest trigger unless one runs it, starts it or failed on it.
    fn maybe_switch(&mut self) {
        if self.stopping || self.starting.is_some() || self.live.is_none() {
            return;
        }
        let Some((line, _)) = self.seen.clone() else {
            return;
        };
        let live = self.live.as_ref().and_then(|p| p.release.as_ref());
        if live == Some(&line) || self.failed.as_ref() == Some(&line) {
            return;
        }
        self.launch(Some(line));
    }

    /// The starting process exited (`reaped`) or never listened: it is dropped, and the live
    /// one, if any, keeps serving.
    fn start_failed(&mut self, why: String, reaped: bool) {
        let Some(p) = self.starting.take() else {
            return;
        };
        p.gone.store(true, Ordering::Relaxed);
        signal_group(p.pid, libc::SIGKILL);
        let wanted = p.release.as_deref().and_then(trigger::parse);
        let name = describe_release(p.release.as_deref());
        match &self.live {
            Some(live) => {
                let msg = format!(
                    "the new process for {name} {why}; {} (pid {}) keeps serving",
                    describe_release(live.release.as_deref()),
                    live.pid
                );
                log!("{msg}");
                self.status.last_failure = Some(msg);
                self.status.failed_digest = wanted.map(|(d, _)| d);
                self.status.last_failure_at = Some(now_rfc3339());
                self.failed = p.release.clone();
            }
            None => {
                let msg = format!("the app ({name}) {why}");
                self.status.last_exit = Some(msg.clone());
                self.status.restarts += 1;
                self.launch_failed(msg);
            }
        }
        if !reaped {
            self.draining.push(p); // reaped with the others
        }
        self.maybe_switch();
        if self.starting.is_none() {
            self.spawn_spare();
        }
    }

    fn reaped(&mut self) {
        for (pid, status) in reap_all() {
            // Whatever a process left behind in its group goes with it.
            signal_group(pid, libc::SIGKILL);
            let is = |p: &Option<Proc>| p.as_ref().is_some_and(|p| p.pid == pid);
            if self.spare.as_ref().is_some_and(|s| s.pid == pid) {
                // Replaced at the next switch; not at once, so a node that cannot boot does
                // not spin.
                self.spare = None;
                if !self.stopping {
                    log!("the standby node (pid {pid}) {}", describe(status));
                }
                continue;
            }
            if self.stopping {
                if is(&self.live) {
                    self.exit = Some(exit_code(status));
                    self.live = None;
                }
                if is(&self.starting) {
                    self.starting = None;
                }
                self.draining.retain(|p| p.pid != pid);
            } else if is(&self.live) {
                let p = self.live.take().expect("checked");
                let how = describe(status);
                let mut b = self.shared.backend.lock().unwrap();
                if b.as_ref().is_some_and(|b| b.id == p.id) {
                    *b = None;
                }
                drop(b);
                self.status.last_exit = Some(format!("pid {pid} {how}"));
                self.status.restarts += 1;
                self.status.pid = None;
                self.status.port = None;
                if p.started.elapsed() >= HEALTHY_AFTER {
                    self.crash_streak = 0;
                }
                log!("the app (pid {pid}) {how}");
                self.restart_later();
            } else if is(&self.starting) {
                self.start_failed(format!("{} before it listened", describe(status)), true);
            } else {
                // A drained process, or an orphan the app left (we are its subreaper).
                self.draining.retain(|p| p.pid != pid);
            }
        }
    }

    fn restart_later(&mut self) {
        self.status.state = RunState::Restarting;
        self.crash_streak += 1;
        let backoff = Duration::from_millis(100)
            .saturating_mul(1 << (self.crash_streak - 1).min(10))
            .min(MAX_BACKOFF);
        log!("restarting the app in {backoff:?}");
        let tx = self.tx.clone();
        thread::spawn(move || {
            thread::sleep(backoff);
            let _ = tx.send(Ev::Restart);
        });
    }

    fn stop(&mut self, sig: i32) {
        if !self.stopping {
            self.stopping = true;
            self.status.state = RunState::Stopping;
            log!("stopping on signal {sig}");
            self.kill_later(None);
        }
        for pid in self.pids() {
            signal_group(pid, sig);
        }
    }

    fn save(&mut self) {
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

/// `1a2b3c4d (generation 7)`, from a trigger line.
fn describe_release(line: Option<&str>) -> String {
    match line.and_then(trigger::parse) {
        Some((d, g)) => format!("{} (generation {g})", d.short()),
        None => "the app".into(),
    }
}

fn trigger_name() -> &'static Path {
    Path::new(volume::RELOAD_TRIGGER)
        .file_name()
        .map(Path::new)
        .expect("the trigger has a file name")
}

/// Wakes the supervisor on every change in the trigger's directory. Not on reads: notify
/// reports opens too, and reading the trigger after each wake would wake it again, for ever.
fn watch(dir: &Path, tx: Sender<Ev>) -> Result<notify::RecommendedWatcher> {
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

// --- forwarding -------------------------------------------------------------------------------

fn accept(listener: TcpListener, shared: Arc<Shared>, hold: Duration) {
    for conn in listener.incoming() {
        match conn {
            Ok(c) => {
                let shared = shared.clone();
                let spawned = thread::Builder::new()
                    .stack_size(128 << 10)
                    .spawn(move || forward(c, &shared, hold));
                if let Err(e) = spawned {
                    log!("cannot start a connection thread: {e}");
                }
            }
            // Out of descriptors or memory: back off instead of spinning.
            Err(e) => {
                log!("accept: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Counts a connection against the process it went to, so draining waits for it.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

fn forward(client: TcpStream, shared: &Shared, hold: Duration) {
    let deadline = Instant::now() + hold;
    let mut refused = false;
    let (backend, _counted) = loop {
        let mut b = shared.backend.lock().unwrap();
        if refused {
            // The process just died or is being replaced: give the supervisor a moment.
            b = shared
                .changed
                .wait_timeout(b, Duration::from_millis(10))
                .unwrap()
                .0;
        }
        while b.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return; // closing the connection is all that is left
            }
            b = shared.changed.wait_timeout(b, left).unwrap().0;
        }
        if Instant::now() > deadline {
            return;
        }
        let be = b.as_ref().expect("checked");
        // Counted before connecting, so a drain never sees zero while this one is on its way.
        be.conns.fetch_add(1, Ordering::AcqRel);
        let counted = Counted(be.conns.clone());
        let addr = be.addr;
        drop(b);
        match TcpStream::connect(addr) {
            Ok(s) => break (s, counted),
            Err(_) => refused = true,
        }
    };
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    let (Ok(mut c_in), Ok(mut b_out)) = (client.try_clone(), backend.try_clone()) else {
        return;
    };
    let up = thread::Builder::new().stack_size(128 << 10).spawn(move || {
        let _ = io::copy(&mut c_in, &mut b_out);
        // The client is done sending; the app may still answer.
        let _ = b_out.shutdown(Shutdown::Write);
    });
    let (mut b_in, mut c_out) = (backend, client);
    let _ = io::copy(&mut b_in, &mut c_out);
    // The app closed (or died): nothing more can reach the client; stop the other direction.
    let _ = c_out.shutdown(Shutdown::Both);
    let _ = b_in.shutdown(Shutdown::Both);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

// --- processes --------------------------------------------------------------------------------

/// Orphans of the app are reparented to us (not to the node's init) so we reap them too.
fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Every exited child, reaped without blocking: (pid, wait status).
fn reap_all() -> Vec<(libc::pid_t, libc::c_int)> {
    let mut out = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid with a valid out-pointer has no other preconditions.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return out;
        }
        out.push((pid, status));
    }
}

fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; ESRCH (group gone) is fine.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended with wait status {status}")
    }
}

fn exit_code(status: libc::c_int) -> ExitCode {
    if libc::WIFEXITED(status) {
        ExitCode::from(libc::WEXITSTATUS(status) as u8)
    } else if libc::WIFSIGNALED(status) {
        ExitCode::from((128 + libc::WTERMSIG(status)) as u8)
    } else {
        ExitCode::FAILURE
    }
}

/// The public socket for shared-socket mode: bound (so the port is ours) but not listening,
/// so connections are refused until the first app process listens on it. Kept at fd ≥ 10.
fn bind_unlistened(addr: &SocketAddr) -> Result<(OwnedFd, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let try_bind = |addr: &SocketAddr| -> io::Result<Socket> {
        let s = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(false)?;
        }
        s.bind(&(*addr).into())?;
        Ok(s)
    };
    let s = try_bind(addr)
        .or_else(|e| match addr {
            // A node without IPv6 still serves IPv4.
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                try_bind(&SocketAddr::from(([0, 0, 0, 0], addr.port())))
            }
            _ => Err(e),
        })
        .with_context(|| format!("binding {addr} (--listen): is another process on it?"))?;
    let bound = s
        .local_addr()?
        .as_socket()
        .context("the public socket has no IP address")?;
    log!("bound {bound}; node listens on it");
    Ok((high_fd(OwnedFd::from(s))?, bound))
}

/// A close-on-exec pipe for a child's "listening" line, both ends at fd ≥ 10.
fn ready_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors we now own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high_fd(r)?, high_fd(w)?))
}

/// `fd` moved to a descriptor ≥ 10 (close-on-exec), out of the way of the child's 3 and 4.
fn high_fd(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: n is a fresh descriptor from fcntl.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Copies this executable to `<root>/.aether/bin/aether-run` (0755, renamed into place), so the
/// app container can run it from the shared volume. Skipped when the copy is already identical.
pub fn install(root: &Path) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the fetcher's own binary")?;
    let dest = root.join(volume::RUNNER);
    let dir = dest.parent().expect("RUNNER has a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    if fs::read(&dest).is_ok_and(|b| b == bytes) {
        return Ok(dest);
    }
    let tmp = dir.join(format!(".aether-run.tmp{}", std::process::id()));
    fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, &dest).with_context(|| format!("installing {}", dest.display()))?;
    Ok(dest)
}
