//! Starting processes and switching to them: the warm standby, a new release beside the live
//! one, the switch once it listens, and the drain of the old one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use aether_artifact::{app, trigger, RunState};
use anyhow::{Context, Result};

use super::forward::*;
use super::posix::*;
use super::supervisor::*;
use super::tail::Tail;
use super::*;

/// What the next process runs, read from the release's record when it starts.
pub(super) struct Plan {
    /// The whole command of a cold start: the configured one, the record's node flags, the
    /// entry point and its arguments.
    pub command: Vec<OsString>,
    /// The record's node flags and variables: what a standby must have been started with.
    pub flags: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The entry point and its arguments (what the loader runs).
    pub argv: Vec<OsString>,
    /// The release directory itself (not the `current` link), where the app starts, as
    /// `npm start` starts it in the package's directory.
    pub cwd: Option<PathBuf>,
    /// The port the app listens on when it does not read `PORT`.
    pub port: Option<u16>,
    /// Where the loader opens node's inspector (`cargo xtask debug`).
    pub inspect: Option<String>,
}

impl Supervisor {
    /// The plan for the next process: the configured command, and with `--entry-from` the
    /// release's flags, variables, entry point and arguments from its record, read now (a
    /// release without one starts `server.js`).
    pub(super) fn plan_now(&self) -> Plan {
        let mut plan = Plan {
            command: self.cfg.command.clone(),
            flags: Vec::new(),
            env: BTreeMap::new(),
            argv: Vec::new(),
            cwd: None,
            port: None,
            inspect: None,
        };
        let Some(dir) = &self.cfg.entry_from else {
            let skip = 1 + self.node_flags().map_or(0, |(_, f)| f.len());
            plan.argv = self.cfg.command.iter().skip(skip).cloned().collect();
            return plan;
        };
        let record = match app::ReleaseRecord::read(dir) {
            Ok(r) => r,
            Err(e) => {
                log!("{e}; starting {}", app::LEGACY_ENTRY);
                None
            }
        };
        let (entry, args) = match record {
            Some(r) => {
                plan.flags = r.node_flags;
                plan.env = r.env;
                plan.port = r.port;
                (r.entry, r.args)
            }
            None => (app::LEGACY_ENTRY.to_string(), Vec::new()),
        };
        // Resolved now, so the process stays in its release when `current` moves on.
        let root = fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        plan.argv.push(root.join(entry).into_os_string());
        plan.argv.extend(args.into_iter().map(OsString::from));
        plan.command.extend(
            plan.flags
                .iter()
                .map(OsString::from)
                .chain(plan.argv.iter().cloned()),
        );
        plan.cwd = Some(root);
        plan
    }

    /// `(node, its flags)` when the command is `node [--flag…] …` and `--warm` is on.
    pub(super) fn node_flags(&self) -> Option<(&OsString, Vec<&OsString>)> {
        let (prog, args) = self.cfg.command.split_first()?;
        let flags: Vec<&OsString> = args
            .iter()
            .take_while(|a| a.to_string_lossy().starts_with('-'))
            .collect();
        (self.cfg.warm && Path::new(prog).file_name() == Some("node".as_ref()))
            .then_some((prog, flags))
    }

    /// Boots the next process ahead of need, when there is none and the command allows it:
    /// with the flags and variables of the release that runs now, which the next one most
    /// likely shares.
    pub(super) fn spawn_spare(&mut self) {
        if self.stopping || self.spare.is_some() || self.node_flags().is_none() {
            return;
        }
        let plan = self.plan_now();
        if !app::standby_safe(&plan.flags, &plan.env) {
            return;
        }
        match self.spawn_loader(&plan.flags, &plan.env, None) {
            Ok(s) => self.spare = Some(s),
            Err(e) => log!("cannot start a standby node: {e}"),
        }
    }

    /// Starts `node [flags] -e <loader>`, which boots and waits for the entry point on stdin.
    /// `cwd` is where node starts, for flags that load code relative to it.
    pub(super) fn spawn_loader(
        &mut self,
        record_flags: &[String],
        env: &BTreeMap<String, String>,
        cwd: Option<&Path>,
    ) -> io::Result<Spare> {
        let (prog, flags) = self.node_flags().expect("only for node");
        let mut cmd = Command::new(prog);
        cmd.args(flags)
            .args(record_flags)
            .arg("-e")
            .arg(LOADER)
            .envs(env)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
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
        Ok(Spare {
            id,
            pid: c.id() as libc::pid_t,
            port,
            stdin: c.stdin.take().expect("piped"),
            tail: Tail::follow(c.stderr.take().expect("piped")),
            flags: record_flags.to_vec(),
            env: env.clone(),
        })
    }

    /// Starts an app process: through a standby node (booted ahead when its flags and
    /// variables allow, else now), or cold on a fresh private port; it reports when it listens.
    pub(super) fn launch(&mut self, release: Option<String>) {
        let mut plan = self.plan_now();
        let inspector = release
            .as_deref()
            .and_then(trigger::inspect)
            .and_then(|port| self.with_inspector(&mut plan, port));
        let (id, pid, port, tail) = if self.socket.is_some() {
            match self.through_loader(&plan) {
                Ok(started) => started,
                Err(e) => {
                    return self.launch_failed(format!("cannot start node through the loader: {e}"))
                }
            }
        } else {
            let (prog, args) = plan.command.split_first().expect("checked at start");
            let private = match free_port() {
                Ok(p) => p,
                Err(e) => return self.launch_failed(format!("no free port for the app: {e}")),
            };
            let mut cmd = Command::new(prog);
            cmd.args(args)
                .envs(&plan.env)
                .env("PORT", private.to_string())
                .stderr(std::process::Stdio::piped())
                .process_group(0);
            if let Some(d) = &plan.cwd {
                cmd.current_dir(d);
            }
            match cmd.spawn() {
                Ok(mut c) => {
                    self.next_id += 1;
                    let tail = Tail::follow(c.stderr.take().expect("piped"));
                    // An app on a fixed port is probed there.
                    let port = plan.port.unwrap_or(private);
                    (self.next_id, c.id() as libc::pid_t, port, tail)
                }
                Err(e) => {
                    let why = format!("cannot start {}: {e}", prog.to_string_lossy());
                    return self.launch_failed(why);
                }
            }
        };
        let p = Proc {
            id,
            pid,
            port,
            release,
            inspector,
            started: Instant::now(),
            tail,
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
            self.probe(tx, id, pid, gone, port, deadline);
        }
        if self.live.is_none() {
            self.status.state = RunState::Starting;
        }
        self.starting = Some(p);
    }

    /// Tells a loader to run the plan's entry point now: the standby when it was started with
    /// the plan's flags and variables, else a node started for it (the mismatched standby goes).
    pub(super) fn through_loader(
        &mut self,
        plan: &Plan,
    ) -> io::Result<(u64, libc::pid_t, u16, Tail)> {
        use std::io::Write as _;
        let warm = app::standby_safe(&plan.flags, &plan.env);
        let mut sp = match self.spare.take() {
            Some(sp) if warm && sp.flags == plan.flags && sp.env == plan.env => sp,
            other => {
                if let Some(old) = other {
                    signal_group(old.pid, libc::SIGKILL);
                }
                self.spawn_loader(&plan.flags, &plan.env, plan.cwd.as_deref())?
            }
        };
        let line = serde_json::json!({
            "argv": plan.argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
            "cwd": plan.cwd.as_ref().map(|d| d.to_string_lossy()),
            "port": plan.port,
            "inspect": plan.inspect,
        });
        let mut line = serde_json::to_vec(&line).expect("json serialises");
        line.push(b'\n');
        // Dropping stdin after the line closes the pipe; the loader has its data by then.
        sp.stdin.write_all(&line)?;
        Ok((sp.id, sp.pid, sp.port, sp.tail))
    }

    pub(super) fn launch_failed(&mut self, why: String) {
        log!("{why}");
        self.status.last_failure = Some(why);
        self.status.last_failure_at = Some(now_rfc3339());
        if self.live.is_none() {
            self.restart_later();
        }
    }

    /// The process of `id` accepts connections: it becomes the live one.
    pub(super) fn listening(&mut self, id: u64, addr: SocketAddr) -> Result<()> {
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
        let inspector = p.inspector.clone();
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
        if s.inspector != inspector {
            match &inspector {
                Some(a) => log!("node's inspector is on {a} (pid {pid})"),
                None => log!("node's inspector is off"),
            }
        }
        s.inspector = inspector;
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

    pub(super) fn listen_addr(&self) -> Result<SocketAddr> {
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

    pub(super) fn bind(&mut self) -> Result<()> {
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
    pub(super) fn drain(&mut self, old: Proc) {
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

    /// Starts a process on the newest trigger unless one runs it, starts it or failed on it.
    pub(super) fn maybe_switch(&mut self) {
        let next = switch_to(&Moment {
            stopping: self.stopping,
            starting: self.starting.is_some(),
            live: self.live.as_ref().map(|p| p.release.as_deref()),
            failed: self.failed.as_deref(),
            seen: self.seen.as_ref().map(|(l, _)| l.as_str()),
        })
        .map(str::to_string);
        if let Some(line) = next {
            self.launch(Some(line));
        }
    }
}

/// What the supervisor knows when it decides whether to switch.
pub(super) struct Moment<'a> {
    pub stopping: bool,
    /// A new process is starting already (it finishes, or fails, first).
    pub starting: bool,
    /// The live process, and the trigger line it runs (`None` outside: no live process).
    pub live: Option<Option<&'a str>>,
    /// The trigger line whose process failed to start.
    pub failed: Option<&'a str>,
    /// The latest trigger line seen.
    pub seen: Option<&'a str>,
}

/// The release to start beside the live process, if any: the one last seen, unless the
/// supervisor stops, a start is under way, nothing is live yet (the first start and crash
/// restarts have their own path), the live process runs it already, or it failed to start
/// (it is not retried in a loop; a newer release is).
pub(super) fn switch_to<'a>(m: &Moment<'a>) -> Option<&'a str> {
    if m.stopping || m.starting {
        return None;
    }
    let live = m.live?;
    let seen = m.seen?;
    (live != Some(seen) && m.failed != Some(seen)).then_some(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "v1-line";
    const V2: &str = "v2-line";

    fn at(seen: Option<&'static str>) -> Moment<'static> {
        Moment {
            stopping: false,
            starting: false,
            live: Some(Some(V1)),
            failed: None,
            seen,
        }
    }

    #[test]
    fn a_new_release_starts_beside_the_live_one() {
        assert_eq!(switch_to(&at(Some(V2))), Some(V2));
        // A live process started before any trigger (no line) switches to the first one.
        let first = Moment {
            live: Some(None),
            ..at(Some(V1))
        };
        assert_eq!(switch_to(&first), Some(V1));
    }

    #[test]
    fn nothing_starts_for_what_runs_already_or_with_nothing_seen() {
        assert_eq!(switch_to(&at(Some(V1))), None);
        assert_eq!(switch_to(&at(None)), None);
    }

    #[test]
    fn a_release_that_failed_to_start_is_not_retried_but_a_newer_one_is() {
        let failed = Moment {
            failed: Some(V2),
            ..at(Some(V2))
        };
        assert_eq!(switch_to(&failed), None);
        let newer = Moment {
            failed: Some(V2),
            ..at(Some("v3-line"))
        };
        assert_eq!(switch_to(&newer), Some("v3-line"));
        // Rolling back to what runs is no switch, whatever failed meanwhile.
        let back = Moment {
            failed: Some(V2),
            ..at(Some(V1))
        };
        assert_eq!(switch_to(&back), None);
    }

    #[test]
    fn no_switch_while_stopping_starting_or_with_nothing_live() {
        assert_eq!(
            switch_to(&Moment {
                stopping: true,
                ..at(Some(V2))
            }),
            None
        );
        assert_eq!(
            switch_to(&Moment {
                starting: true,
                ..at(Some(V2))
            }),
            None
        );
        // Nothing live: a crash restart or the first start launches, not a switch.
        assert_eq!(
            switch_to(&Moment {
                live: None,
                ..at(Some(V2))
            }),
            None
        );
    }
}
