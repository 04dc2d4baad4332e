//! Processes and ports on this machine: what the local target and the embedded store need to
//! start, find and stop their processes (typed calls, no shell).

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// A loopback port nothing listens on right now (the kernel picks it).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// TERM to a whole process group, then KILL after 5 s if anything is left.
pub fn kill_group(pgid: u32) -> Result<()> {
    let signal = |sig: libc::c_int| {
        // SAFETY: kill has no memory-safety preconditions; a gone group is ESRCH, ignored.
        unsafe { libc::kill(-(pgid as libc::pid_t), sig) };
    };
    signal(libc::SIGTERM);
    if wait_until(Duration::from_secs(5), || !group_alive(pgid)).is_err() {
        signal(libc::SIGKILL);
        let _ = wait_until(Duration::from_secs(2), || !group_alive(pgid));
    }
    Ok(())
}

pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

/// Alive and not a zombie (children we started are reparented, and may sit unreaped).
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
        .unwrap_or(false)
}

/// Whether any live process is still in the group.
pub fn group_alive(pgid: u32) -> bool {
    !group_members(pgid).is_empty()
}

/// Live (non-zombie) processes of a process group, with their command names.
pub fn group_members(pgid: u32) -> Vec<(u32, String)> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1.to_string();
            let f: Vec<&str> = rest.split(' ').collect();
            (f.len() > 3 && f[2] == pgid.to_string() && f[0] != "Z" && f[0] != "X")
                .then_some((pid, comm))
        })
        .collect()
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let t = Instant::now();
    loop {
        if f() {
            return Ok(());
        }
        if t.elapsed() > timeout {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
