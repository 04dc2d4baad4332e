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
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use aether_artifact::RunnerStatus;
use anyhow::{bail, Context, Result};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::fetcher::status::{now_rfc3339, unix_now_ms};

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

mod exits;
mod forward;
mod inspect;
mod install;
mod launch;
mod posix;
mod supervisor;
mod tail;

pub use install::install;
use posix::*;

// --- the supervisor ---------------------------------------------------------------------------

enum Ev {
    Signal(i32),
    Trigger,
    Listening {
        id: u64,
        addr: SocketAddr,
    },
    StartTimeout {
        id: u64,
    },
    /// It listens, but only on `ports`, not on its `port`.
    ListensElsewhere {
        id: u64,
        port: u16,
        ports: Vec<u16>,
    },
    Drained {
        id: u64,
    },
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
    /// `127.0.0.1:<port>` when it runs with node's inspector (the trigger asked for it).
    inspector: Option<String>,
    started: Instant,
    /// Its stderr's last lines.
    tail: tail::Tail,
    /// Open connections forwarded to it.
    conns: Arc<AtomicUsize>,
    /// Tells its start-up prober to stop.
    gone: Arc<AtomicBool>,
}

/// A `node` that has booted and waits on its stdin before it loads the entry point: a switch then
/// costs loading the app, not node's own start (~100 ms of a ~130 ms cold start here). The
/// entry point is resolved when it loads, so `current/…` is the release of that moment, and
/// the app sees what a plain `node current/server.js` sees (`require.main`, `process.argv`).
/// Only for `node [flags…] <entry>`, and a release whose flags load nothing when node starts
/// ([`aether_artifact::app::standby_safe`]); `--warm false` turns it off.
struct Spare {
    id: u64,
    pid: libc::pid_t,
    port: u16,
    stdin: std::process::ChildStdin,
    tail: tail::Tail,
    /// The release's node flags and variables it was started with: it runs only a release
    /// with the same.
    flags: Vec<String>,
    env: std::collections::BTreeMap<String, String>,
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
