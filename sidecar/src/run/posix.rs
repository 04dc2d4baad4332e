//! The POSIX duties of an init: the subreaper, reaping, process groups and signals, exit
//! statuses, and the sockets and pipes handed to app processes.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use anyhow::{Context, Result};

/// Orphans of the app are reparented to us (not to the node's init) so we reap them too.
pub(super) fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Every exited child, reaped without blocking: (pid, wait status).
pub(super) fn reap_all() -> Vec<(libc::pid_t, libc::c_int)> {
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

pub(super) fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; ESRCH (group gone) is fine.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

pub(super) fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended with wait status {status}")
    }
}

pub(super) fn exit_code(status: libc::c_int) -> ExitCode {
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
pub(super) fn bind_unlistened(addr: &SocketAddr) -> Result<(OwnedFd, SocketAddr)> {
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
pub(super) fn ready_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
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
pub(super) fn high_fd(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: n is a fresh descriptor from fcntl.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

pub(super) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The TCP ports `pid` itself listens on (IPv4 and IPv6), from `/proc`: its socket inodes,
/// matched against the kernel's tables of listening sockets. Empty when it cannot be read.
pub(super) fn listening_ports(pid: libc::pid_t) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: std::collections::HashSet<String> = fds
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        // The table of the process's own network namespace.
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1 (`0100007F:1F90`), st field 3 (`0A`: LISTEN), inode 9.
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let (Some(port), true) = (port, *state == "0A" && inodes.contains(*inode)) {
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}
