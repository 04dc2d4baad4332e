//! Deterministic packing of a directory into a tar.gz whose SHA-256 is the artifact digest.
//!
//! The bytes depend only on the tree's paths, contents, exec bits and symlink targets: entries
//! are sorted, every header has mtime [`MTIME`], uid/gid 0 and no user/group names, and modes are
//! normalised to 0644/0755. The tar stream is cut into fixed [`CHUNK_SIZE`] pieces that are
//! compressed as independent gzip members (header without name or timestamp), so chunks can be
//! compressed on several threads while the output stays byte-for-byte the same whatever the
//! thread count. Any gzip reader (`gzip -d`, `tar -xzf`, flate2's `MultiGzDecoder`) reads
//! concatenated members as one stream.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Mutex};

use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};

use crate::Digest;

mod walk;

use walk::*;

/// Modification time written into every header. 1 rather than 0: some tools treat 0 as
/// "unknown" and substitute the current time, which would break reproducibility downstream.
pub const MTIME: u64 = 1;
/// gzip level; part of the contract because it changes the bytes.
pub const LEVEL: u32 = 6;
/// Uncompressed bytes per gzip member; part of the contract because it changes the bytes.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Ignore file read from the root of the packed directory (gitignore syntax).
pub const IGNORE_FILE: &str = ".aetherignore";

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    // The cause is part of the message and deliberately not `source()`: printed as a chain it
    // would appear twice.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: io::Error },
    #[error("cannot pack {}: {why}", path.display())]
    Refused { path: PathBuf, why: String },
    #[error("writing the archive: {0}")]
    Output(io::Error),
}

/// What a pack produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub digest: Digest,
    /// Compressed bytes written.
    pub bytes: u64,
    /// Tar entries (files, directories and symlinks).
    pub entries: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
}

/// Packs `root` into `out` and returns the digest, computed over the bytes as they are written.
pub fn pack_dir<W: Write + Send>(root: &Path, out: W) -> Result<Packed, PackError> {
    pack_dir_with_threads(root, out, default_threads())
}

/// Compression threads [`pack_dir`] uses: the cores, at most 4.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
}

/// As [`pack_dir`] with an explicit number of compression threads (the output does not depend on it).
pub fn pack_dir_with_threads<W: Write + Send>(
    root: &Path,
    out: W,
    threads: usize,
) -> Result<Packed, PackError> {
    pack_dir_with_progress(root, out, threads, &|_, _| {})
}

/// How much [`pack_dir`] will read: `(files, bytes of content)`, by the same rules (ignored
/// paths and `.git/` skipped), from metadata only. For a progress display's total.
pub fn measure(root: &Path) -> Result<(u64, u64), PackError> {
    measure_layout(root, &Layout::default())
}

/// As [`measure`], with `layout`'s exclusions (its extra files are not counted).
pub fn measure_layout(root: &Path, layout: &Layout) -> Result<(u64, u64), PackError> {
    fn go(
        root: &Path,
        dir: &Path,
        ignore: &ignore::gitignore::Gitignore,
        layout: &Layout,
        acc: &mut (u64, u64),
    ) -> Result<(), PackError> {
        let rd = fs::read_dir(dir).map_err(|err| PackError::Io {
            path: dir.to_path_buf(),
            err,
        })?;
        for e in rd.flatten() {
            let path = e.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            let rel = path.strip_prefix(root).expect("under root");
            if skipped(&path, rel, &e.file_name(), ft.is_dir(), ignore)
                || (dir == root && layout.skips_root_name(&e.file_name()))
            {
                continue;
            }
            if ft.is_dir() {
                go(root, &path, ignore, layout, acc)?;
            } else if ft.is_file() {
                acc.0 += 1;
                acc.1 += meta.len();
            }
        }
        Ok(())
    }
    let ignore = load_ignore(root)?;
    let mut acc = (0, 0);
    go(root, root, &ignore, layout, &mut acc)?;
    Ok(acc)
}

/// Whether the walk leaves a path out: `.git/` always, and what `.aetherignore` ignores.
/// Directories that are never app content, wherever they are: git's, and aether-dev's own
/// state (`.aether/`: the signing key, the embedded store's data, logs). The xtask lives in the
/// app's repository, so packing the repository root must not ship the signing secret to every
/// pod.
pub const NEVER_PACKED: [&str; 2] = [".git", ".aether"];

/// The first line of a cache directory tag (<https://bford.info/cachedir/>): Cargo writes one
/// into `target/`, and tar's `--exclude-caches` honours it the same way.
const CACHEDIR_TAG: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Whether `dir` is a tagged cache directory (Cargo's `target/`, and other tools' caches).
fn is_cache_dir(dir: &Path) -> bool {
    let mut head = [0u8; CACHEDIR_TAG.len()];
    fs::File::open(dir.join("CACHEDIR.TAG"))
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| head == CACHEDIR_TAG)
}

fn skipped(
    path: &Path,
    rel: &Path,
    name: &std::ffi::OsStr,
    is_dir: bool,
    ignore: &ignore::gitignore::Gitignore,
) -> bool {
    (is_dir && (NEVER_PACKED.iter().any(|n| name == *n) || is_cache_dir(path)))
        || ignore.matched_path_or_any_parents(rel, is_dir).is_ignore()
}

/// Fails as packing `root` would at once when it is missing or not a directory, so commands can
/// refuse bad input before they start anything.
pub fn check_root(root: &Path) -> Result<(), PackError> {
    let meta = fs::metadata(root).map_err(|err| PackError::Io {
        path: root.to_path_buf(),
        err,
    })?;
    if !meta.is_dir() {
        return Err(PackError::Refused {
            path: root.to_path_buf(),
            why: "it is not a directory; pass the directory that holds the app".into(),
        });
    }
    Ok(())
}

/// What a pack leaves out of the tree and adds to it: how the app layer is made without
/// `node_modules` and with its release file.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Names left out at the root (e.g. `node_modules`, packed as its own layer).
    pub exclude_root: Vec<String>,
    /// Files written first, before the tree, as `(path, bytes)`; a file of the tree with the
    /// same path at the root is left out.
    pub extra: Vec<(String, Vec<u8>)>,
}

impl Layout {
    fn skips_root_name(&self, name: &std::ffi::OsStr) -> bool {
        let name = name.to_string_lossy();
        self.exclude_root.iter().any(|n| *n == name) || self.extra.iter().any(|(p, _)| *p == name)
    }
}

/// As [`pack_dir_with_threads`], calling `progress(files, content bytes)` after each file.
pub fn pack_dir_with_progress<W: Write + Send>(
    root: &Path,
    out: W,
    threads: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Packed, PackError> {
    pack_layout(root, out, threads, progress, &Layout::default())
}

/// As [`pack_dir_with_progress`], with `layout`'s exclusions and extra files.
pub fn pack_layout<W: Write + Send>(
    root: &Path,
    out: W,
    threads: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
    layout: &Layout,
) -> Result<Packed, PackError> {
    check_root(root)?;
    let ignore = load_ignore(root)?;
    let threads = threads.max(1);

    let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads * 2);
    let (done_tx, done_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads * 2);
    let work_rx = Mutex::new(work_rx);
    let work_rx = &work_rx;
    std::thread::scope(|s| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            s.spawn(move || loop {
                let next = work_rx.lock().unwrap().recv();
                let Ok((seq, chunk)) = next else { return };
                if done_tx.send((seq, compress_member(&chunk))).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let writer = s.spawn(move || write_in_order(done_rx, out));

        let mut chunker = Chunker {
            buf: Vec::with_capacity(CHUNK_SIZE * 2),
            seq: 0,
            tx: work_tx,
        };
        let walked = {
            let mut tar = tar::Builder::new(&mut chunker);
            let mut stats = Stats {
                entries: 0,
                files: 0,
                bytes: 0,
                progress,
            };
            let res = extras(layout, &mut tar, &mut stats)
                .and_then(|()| walk(root, root, &ignore, layout, &mut tar, &mut stats))
                .and_then(|()| tar.finish().map_err(PackError::Output));
            res.map(|()| (stats.entries, stats.bytes))
        };
        let flushed = walked.and_then(|stats| chunker.flush_last().map(|()| stats));
        drop(chunker);
        let written = writer.join().expect("archive writer panicked");
        let (entries, content_bytes) = flushed?;
        let (bytes, digest) = written.map_err(PackError::Output)?;
        Ok(Packed {
            digest,
            bytes,
            entries,
            content_bytes,
        })
    })
}

/// Convenience for tests and small trees: the archive bytes in memory.
pub fn pack_to_vec(root: &Path) -> Result<(Vec<u8>, Packed), PackError> {
    let mut buf = Vec::new();
    let packed = pack_dir(root, &mut buf)?;
    Ok((buf, packed))
}

fn compress_member(chunk: &[u8]) -> Vec<u8> {
    // No name, no timestamp, OS "unknown": the header carries nothing about this machine.
    let mut enc = GzBuilder::new().mtime(0).operating_system(255).write(
        Vec::with_capacity(chunk.len() / 3 + 64),
        Compression::new(LEVEL),
    );
    enc.write_all(chunk).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

fn write_in_order<W: Write>(
    rx: mpsc::Receiver<(u64, Vec<u8>)>,
    mut out: W,
) -> io::Result<(u64, Digest)> {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    for (seq, member) in rx {
        pending.insert(seq, member);
        while let Some(member) = pending.remove(&next) {
            hasher.update(&member);
            out.write_all(&member)?;
            bytes += member.len() as u64;
            next += 1;
        }
    }
    if !pending.is_empty() {
        return Err(io::Error::other(
            "archive chunks missing: a compression thread stopped early",
        ));
    }
    out.flush()?;
    Ok((bytes, Digest::from_bytes(hasher.finalize().into())))
}

struct Chunker {
    buf: Vec<u8>,
    seq: u64,
    tx: mpsc::SyncSender<(u64, Vec<u8>)>,
}

impl Chunker {
    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.tx
            .send((self.seq, chunk))
            .map_err(|_| io::Error::other("the archive writer stopped (see its error)"))?;
        self.seq += 1;
        Ok(())
    }

    fn flush_last(&mut self) -> Result<(), PackError> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send(last).map_err(PackError::Output)?;
        }
        Ok(())
    }
}

impl Write for Chunker {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= CHUNK_SIZE {
            let rest = self.buf.split_off(CHUNK_SIZE);
            let full = std::mem::replace(&mut self.buf, rest);
            self.buf.reserve(CHUNK_SIZE);
            self.send(full)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A symlink at `link` (relative to the root) may point to `target` only if the target is
/// relative and, resolved lexically from the link's directory, stays inside the root without
/// passing through another symlink (`is_link`, relative to the root). A lexical check cannot
/// see where `up/..` goes when `up` is itself a link, so a chain of links is refused rather
/// than followed; a link to a link (as the last component) is fine, each checked on its own.
pub(crate) fn check_link(
    link: &Path,
    target: &Path,
    is_link: &dyn Fn(&Path) -> bool,
) -> Result<(), &'static str> {
    if target.as_os_str().is_empty() {
        return Err("the target is empty");
    }
    let mut at: PathBuf = link.parent().map(Path::to_path_buf).unwrap_or_default();
    let parts: Vec<Component> = target.components().collect();
    for (i, c) in parts.iter().enumerate() {
        match c {
            Component::Normal(n) => {
                at.push(n);
                if i + 1 < parts.len() && is_link(&at) {
                    return Err("it resolves through another symlink");
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !at.pop() {
                    return Err("it points outside the directory");
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err("it is absolute"),
        }
    }
    Ok(())
}
