//! `logs -f` on the local target: the one pod's log file, followed across truncation and
//! replacement (a redeploy starts a new file), and across the pod stopping and starting again.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use crate::targets::LogLine;

/// How often the file is read for new lines: the local loop's saves are served in tens of ms,
/// and a read of an unchanged file costs a `stat`.
const POLL: Duration = Duration::from_millis(100);
/// How much of an existing log a follower starts with.
const TAIL_BYTES: u64 = 16 * 1024;

/// Follows `path`, naming each line's pod with `pod()` (read when the line arrives), until
/// `sink` returns `false`.
pub fn follow(
    path: &Path,
    pod: &dyn Fn() -> String,
    sink: &mut dyn FnMut(LogLine) -> bool,
) -> Result<()> {
    let mut open: Option<(File, u64, u64)> = None; // (file, inode, position)
    let mut partial = Vec::new();
    let mut first = true;
    loop {
        let meta = std::fs::metadata(path).ok();
        let replaced = match (&open, &meta) {
            (Some((_, ino, pos)), Some(m)) => m.ino() != *ino || m.len() < *pos,
            (None, Some(_)) => true,
            _ => false,
        };
        if replaced {
            if let Ok(mut f) = File::open(path) {
                let m = f.metadata()?;
                // Only the first file starts at its tail; a new one is new lines, read whole.
                let start = if first {
                    m.len().saturating_sub(TAIL_BYTES)
                } else {
                    0
                };
                f.seek(SeekFrom::Start(start))?;
                partial.clear();
                if start > 0 {
                    // Starting mid-file: drop the cut line.
                    partial.push(b'\0');
                }
                open = Some((f, m.ino(), start));
            }
        }
        if let Some((f, _, pos)) = &mut open {
            let mut buf = Vec::new();
            let n = f.read_to_end(&mut buf)?;
            *pos += n as u64;
            partial.extend_from_slice(&buf);
            while let Some(i) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=i).collect();
                if line.first() == Some(&b'\0') {
                    continue;
                }
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                let l = LogLine {
                    at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                    pod: pod(),
                    text,
                };
                if !sink(l) {
                    return Ok(());
                }
            }
        }
        first = false;
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Lines written before and after, then a replaced file: all come out whole and once.
    #[test]
    fn follows_growth_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app.log");
        std::fs::write(&p, "one\ntw").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        std::thread::spawn(move || {
            follow(&p2, &|| "pod".into(), &mut |l| tx.send(l.text).is_ok()).unwrap()
        });
        assert_eq!(rx.recv().unwrap(), "one");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"o\n")
            .unwrap();
        assert_eq!(rx.recv().unwrap(), "two");
        let tmp = dir.path().join("new.log");
        std::fs::write(&tmp, "three\n").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(rx.recv().unwrap(), "three");
    }
}
