//! Processes that end: a failed start (the old one keeps serving), a crash (restarted in place
//! with backoff), the orphans reaped, and the stop on a signal.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use aether_artifact::{trigger, RunState};

use super::posix::*;
use super::supervisor::*;
use super::*;

/// How long a failure waits for the rest of a dead process's stderr: it is there at once unless
/// a child of the app still holds the pipe.
const SAID_WAIT: Duration = Duration::from_millis(300);

impl Supervisor {
    pub(super) fn kill_later(&self, pid: Option<libc::pid_t>) {
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

    /// The starting process exited (`reaped`) or never listened: it is dropped, and the live
    /// one, if any, keeps serving.
    pub(super) fn start_failed(&mut self, why: String, reaped: bool) {
        let Some(p) = self.starting.take() else {
            return;
        };
        p.gone.store(true, Ordering::Relaxed);
        signal_group(p.pid, libc::SIGKILL);
        let why = format!("{why}{}", p.tail.said(SAID_WAIT));
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

    pub(super) fn reaped(&mut self) {
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
                let said = p.tail.said(SAID_WAIT);
                self.status.last_exit = Some(format!("pid {pid} {how}{said}"));
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

    pub(super) fn restart_later(&mut self) {
        self.status.state = RunState::Restarting;
        self.crash_streak += 1;
        let backoff = restart_backoff(self.crash_streak);
        log!("restarting the app in {backoff:?}");
        let tx = self.tx.clone();
        thread::spawn(move || {
            thread::sleep(backoff);
            let _ = tx.send(Ev::Restart);
        });
    }

    pub(super) fn stop(&mut self, sig: i32) {
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
}

/// How long a crashed app waits before its restart: 100 ms, doubling with each crash in a row,
/// at most `MAX_BACKOFF` (a streak ends once a process has run `HEALTHY_AFTER`).
pub(super) fn restart_backoff(streak: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << streak.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_doubling_up_to_the_cap() {
        let ms = |n| restart_backoff(n).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(5)], [100, 200, 400, 1600]);
        assert_eq!(ms(8), MAX_BACKOFF.as_millis());
        assert_eq!(ms(1000), MAX_BACKOFF.as_millis());
    }

    #[test]
    fn exits_are_described_and_mapped_like_a_shell_does() {
        // A wait status: exit code in the second byte, a signal in the low bits.
        let exited = |code: i32| code << 8;
        assert_eq!(describe(exited(3)), "exited with status 3");
        assert_eq!(describe(libc::SIGKILL), "was killed by signal 9");
        assert_eq!(exit_code(exited(4)), ExitCode::from(4));
        assert_eq!(exit_code(libc::SIGTERM), ExitCode::from(128 + 15));
    }

    #[test]
    fn a_release_is_named_by_its_trigger_line() {
        let d = aether_artifact::Digest::parse(&"a".repeat(64)).unwrap();
        let line = trigger::line(&d, 7, None);
        assert_eq!(describe_release(Some(&line)), "aaaaaaaaaaaa (generation 7)");
        assert_eq!(describe_release(None), "the app");
        assert_eq!(describe_release(Some("garbage")), "the app");
    }
}
