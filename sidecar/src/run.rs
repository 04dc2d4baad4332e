//! `aether-run -- <command…>`: the app container's PID 1.
//!
//! A process that is PID 1 in its container gets no default signal actions: `node` there
//! ignores SIGTERM and every pod stop waits out its whole grace period (30 s). This init runs
//! the command in its own process group, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to that group,
//! kills what is left `grace` after the first one, reaps every child that is reparented to it
//! (no zombies), and exits with the command's status.
//!
//! It ships inside the fetcher's static binary (one image): the fetcher copies itself to
//! `<root>/.aether/bin/aether-run` at start, and the app container runs it from the shared
//! volume, so the stock node image stays untouched.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

macro_rules! log {
    ($($t:tt)*) => { eprintln!("[aether-run] {}", format!($($t)*)) };
}

pub struct RunConfig {
    pub command: Vec<OsString>,
    /// How long the app has to exit after the first stop signal before it is killed.
    pub grace: Duration,
}

pub fn run(cfg: RunConfig) -> ExitCode {
    match supervise(cfg) {
        Ok(code) => code,
        Err(e) => {
            log!("{e:#}");
            ExitCode::from(127)
        }
    }
}

fn supervise(cfg: RunConfig) -> Result<ExitCode> {
    let Some((prog, args)) = cfg.command.split_first() else {
        bail!("no command: use `aether-run -- node server.js`");
    };
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
            if let Some(status) = reap(pgid) {
                // Whatever the command left behind in its group goes with it.
                signal_group(pgid, libc::SIGKILL);
                while reap(-1).is_some() {}
                return Ok(exit_code(status));
            }
            continue;
        }
        signal_group(pgid, sig);
        if !stopping && sig != SIGHUP {
            stopping = true;
            let grace = cfg.grace;
            std::thread::spawn(move || {
                std::thread::sleep(grace);
                log!("the app did not exit {grace:?} after the stop signal; killing it");
                signal_group(pgid, libc::SIGKILL);
            });
        }
    }
    unreachable!("Signals::forever never ends")
}

/// Reaps every exited child without blocking; returns the wait status of `main` if it was one.
fn reap(main: libc::pid_t) -> Option<libc::c_int> {
    let mut found = None;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid with a valid out-pointer has no other preconditions.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == main || main == -1 {
            found = Some(status);
        }
    }
}

fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; ESRCH (group gone) is fine.
    unsafe {
        libc::kill(-pgid, sig);
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

/// Copies this executable to `<root>/.aether/bin/aether-run` (0755, renamed into place), so the
/// app container can run it from the shared volume. Skipped when the copy is already identical.
pub fn install(root: &Path) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the fetcher's own binary")?;
    let dest = root.join(aether_artifact::volume::RUNNER);
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
