//! An app process's stderr, copied through as it comes and its last lines kept: when the
//! process fails, its own words (`Error: Cannot find module '@mono/util'`) go into the status
//! next to the supervisor's verdict, so `hot-patch --wait` and `hot-status` show why.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How many lines are kept, and how long each may be.
const LINES: usize = 6;
const WIDTH: usize = 240;

#[derive(Default)]
struct State {
    lines: VecDeque<String>,
    partial: Vec<u8>,
    /// The pipe has closed: every line the process wrote is here.
    done: bool,
}

#[derive(Clone, Default)]
pub(super) struct Tail(Arc<(Mutex<State>, Condvar)>);

impl Tail {
    /// Copies `from` to this process's stderr as it comes, keeping the last lines.
    pub fn follow(from: impl io::Read + Send + 'static) -> Tail {
        Tail::copy(from, io::stderr())
    }

    /// Copies `from` to `to` as it comes, keeping the last lines.
    fn copy(mut from: impl io::Read + Send + 'static, mut to: impl Write + Send + 'static) -> Tail {
        let tail = Tail::default();
        let t = tail.clone();
        let spawned = thread::Builder::new().name("stderr".into()).spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = to.write_all(&buf[..n]);
                        t.push(&buf[..n]);
                    }
                }
            }
            let (m, cv) = &*t.0;
            let mut s = m.lock().unwrap();
            let rest = std::mem::take(&mut s.partial);
            keep(&mut s.lines, &rest);
            s.done = true;
            cv.notify_all();
        });
        if spawned.is_err() {
            tail.0 .0.lock().unwrap().done = true;
        }
        tail
    }

    fn push(&self, bytes: &[u8]) {
        let mut s = self.0 .0.lock().unwrap();
        s.partial.extend_from_slice(bytes);
        while let Some(i) = s.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = s.partial.drain(..=i).collect();
            keep(&mut s.lines, &line);
        }
        if s.partial.len() > 4 * WIDTH {
            let line = std::mem::take(&mut s.partial);
            keep(&mut s.lines, &line);
        }
    }

    /// The last lines, once the pipe has closed or `wait` has passed (a process that has
    /// exited closes it at once, unless a child of its own holds it).
    pub fn last_lines(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let (m, cv) = &*self.0;
        let mut s = m.lock().unwrap();
        while !s.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = cv.wait_timeout(s, left).unwrap().0;
        }
        s.lines.iter().cloned().collect()
    }

    /// `; its stderr ended: "a" | "b"`, or nothing when it wrote nothing.
    pub fn said(&self, wait: Duration) -> String {
        let lines = self.last_lines(wait);
        if lines.is_empty() {
            return String::new();
        }
        let quoted: Vec<String> = lines.iter().map(|l| format!("{l:?}")).collect();
        format!("; its stderr ended: {}", quoted.join(" | "))
    }
}

fn keep(lines: &mut VecDeque<String>, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    if text.trim().is_empty() {
        return;
    }
    let mut line: String = text.chars().take(WIDTH).collect();
    if line.len() < text.len() {
        line.push('…');
    }
    if lines.len() == LINES {
        lines.pop_front();
    }
    lines.push_back(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_waits_for_the_end() {
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str("\n   \nError: Cannot find module '@mono/util'");
        let t = Tail::copy(io::Cursor::new(text.into_bytes()), io::sink());
        let lines = t.last_lines(Duration::from_secs(10));
        assert_eq!(lines.len(), LINES);
        assert_eq!(lines[0], "line 5");
        assert_eq!(lines[LINES - 1], "Error: Cannot find module '@mono/util'");
        assert!(t
            .said(Duration::ZERO)
            .contains("| \"Error: Cannot find module '@mono/util'\""));
        let quiet = Tail::copy(io::empty(), io::sink());
        assert_eq!(quiet.said(Duration::from_secs(10)), "");
    }

    #[test]
    fn a_long_line_is_cut() {
        let t = Tail::copy(io::Cursor::new("x".repeat(10_000).into_bytes()), io::sink());
        let lines = t.last_lines(Duration::from_secs(10));
        assert!(
            lines.iter().all(|l| l.chars().count() <= WIDTH + 1),
            "{lines:?}"
        );
    }
}
