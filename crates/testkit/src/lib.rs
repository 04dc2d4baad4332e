//! What every test suite in the workspace shares. The rule it exists for: a test never reads
//! state that follows another event without waiting for that state itself, and never orders
//! events with a sleep. On a busy 2-core CI machine the gap between "the app answered" and
//! "the status file says so" is whatever the scheduler makes it; only a wait on the thing
//! itself, bounded by a deadline that names what it waited for, holds there.

pub mod cdp;
pub mod page;
pub mod postgres;

use std::fmt::Debug;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a wait may take before the test fails. Generous on purpose: a passing wait returns
/// as soon as its condition holds, so the bound costs nothing until something is really wrong,
/// and a busy machine can be ten times slower than an idle one.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns `Ok`, at most `within`, and returns what it gave. On timeout
/// it panics naming `what` and the last thing the probe saw (its `Err`), so a failure says
/// what the test was waiting for and how far the system got.
pub fn wait_until<T, S: Debug>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, S>,
) -> T {
    let t0 = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if t0.elapsed() >= within => {
                panic!("timed out after {within:?} waiting for {what}; last seen: {seen:#?}")
            }
            Err(_) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// [`wait_until`] for a yes/no condition; `seen` describes the state for the timeout message
/// (a log, a status) and is only called then.
pub fn wait_for<S: Debug>(
    what: &str,
    within: Duration,
    mut cond: impl FnMut() -> bool,
    seen: impl FnOnce() -> S,
) {
    let t0 = Instant::now();
    let mut pause = Duration::from_millis(2);
    while !cond() {
        if t0.elapsed() >= within {
            panic!(
                "timed out after {within:?} waiting for {what}; last seen: {:#?}",
                seen()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `Ok(())` when `ok`, else what was seen: the shape [`wait_until`] wants from a probe.
pub fn seen<S>(ok: bool, what: S) -> Result<(), S> {
    if ok {
        Ok(())
    } else {
        Err(what)
    }
}

/// Whether this is a CI run, where a test that cannot run is a failure rather than a skip:
/// `CI` set to anything but empty, `0` or `false` (GitHub, GitLab and most others set `true`,
/// some `1`). The one rule every suite follows.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Says a test cannot run here and why. Under CI it panics instead: there a skipped test
/// would hide a missing install step (`cargo xtask test` installs what the tests need).
pub fn skip(why: &str) {
    if in_ci() {
        panic!("CI is set and this test cannot run: {why}; `cargo xtask test` must provide it");
    }
    eprintln!("SKIPPED: {why} (run `cargo xtask test`, which installs what is missing)");
}

/// `true` when `ok`; otherwise [`skip`]s with `why` and returns `false`, so a test can start
/// with `if !require(node_available(), "node is not installed") { return; }`.
pub fn require(ok: bool, why: &str) -> bool {
    if !ok {
        skip(why);
    }
    ok
}

/// Whether `node` runs here.
pub fn node_available() -> bool {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the tests run as root (a tmpfs mount, another uid, iptables).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a loopback port")
        .port()
}

/// Appends everything `out` produces to `log`, on a thread of its own, until it closes.
pub fn capture(mut out: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            log.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_returns_what_the_probe_found_once_it_holds() {
        let mut n = 0;
        let got = wait_until("the third try", PATIENCE, || {
            n += 1;
            if n == 3 {
                Ok(n)
            } else {
                Err(n)
            }
        });
        assert_eq!(got, 3);
    }

    #[test]
    fn a_wait_that_never_holds_names_what_it_waited_for_and_the_last_state() {
        let err = std::panic::catch_unwind(|| {
            let mut n = 0;
            wait_until("a miracle", Duration::from_millis(30), || {
                n += 1;
                Err::<(), _>(format!("attempt {n}"))
            })
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("waiting for a miracle") && msg.contains("attempt"),
            "{msg}"
        );
        let err = std::panic::catch_unwind(|| {
            wait_for("nothing", Duration::from_millis(10), || false, || "the log")
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("waiting for nothing") && msg.contains("the log"),
            "{msg}"
        );
    }
}
