//! The forwarder, for commands that are not node (or `--warm false`): each accepted connection
//! is copied to the live process, and one that arrives while none listens waits for one.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

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
