//! The forwarder, for commands that are not node (or `--warm false`): the prober that sees a new
//! process listen (or listen elsewhere), and each accepted connection copied to the live
//! process; one that arrives while none listens waits for one.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::posix::listening_ports;
use super::*;

/// How long a new process may listen only on other ports than its own before it fails (it
/// may open a metrics port first).
const ELSEWHERE_GRACE: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Forwarder mode: connects to the new process's port until it accepts. A process that
    /// listens only on other ports for a second fails then, naming them, instead of at the
    /// start timeout.
    pub(super) fn probe(
        &self,
        tx: Sender<Ev>,
        id: u64,
        pid: libc::pid_t,
        gone: Arc<AtomicBool>,
        port: u16,
        deadline: Instant,
    ) {
        thread::spawn(move || {
            let addrs: [SocketAddr; 2] = [
                ([127, 0, 0, 1], port).into(),
                (std::net::Ipv6Addr::LOCALHOST, port).into(),
            ];
            let mut elsewhere_since: Option<Instant> = None;
            let mut next_look = Instant::now();
            while !gone.load(Ordering::Relaxed) {
                // The app may bind 0.0.0.0, :: or only one loopback family.
                for addr in addrs {
                    if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                        let _ = tx.send(Ev::Listening { id, addr });
                        return;
                    }
                }
                if Instant::now() >= next_look {
                    next_look = Instant::now() + Duration::from_millis(100);
                    let ports = listening_ports(pid);
                    if ports.is_empty() || ports.contains(&port) {
                        elsewhere_since = None;
                    } else if elsewhere_since.get_or_insert_with(Instant::now).elapsed()
                        >= ELSEWHERE_GRACE
                    {
                        let _ = tx.send(Ev::ListensElsewhere { id, port, ports });
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
}

pub(super) fn accept(listener: TcpListener, shared: Arc<Shared>, hold: Duration) {
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

pub(super) fn forward(client: TcpStream, shared: &Shared, hold: Duration) {
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
