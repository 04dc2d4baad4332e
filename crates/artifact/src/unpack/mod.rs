//! Verified unpacking: decompress, hash and extract in one streaming pass into a hidden
//! temporary directory beside the destination; rename it into place only if the digest of the
//! compressed bytes matches. Any refusal or mismatch removes the temporary directory.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use crate::Digest;

mod headers;

use headers::HeaderCap;
pub use headers::MAX_EXTENSION;

/// Caps that stop an archive bomb early (both count what the archive expands to), the time an
/// unpack may take, and whether it must be durable before it becomes visible.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Decompressed bytes (tar headers and padding included).
    pub max_bytes: u64,
    /// Tar entries.
    pub max_entries: u64,
    /// Checked between entries and between 256 KiB writes, so a slow volume cannot hold the
    /// caller past it. (A write the kernel never returns from cannot be interrupted at all.)
    pub deadline: Option<std::time::Instant>,
    /// Flush the extracted tree to disk before renaming it into place, and the rename after, so
    /// a node crash never leaves a complete-looking but partly written release.
    pub durable: bool,
}

impl Default for Limits {
    fn default() -> Self {
        // Generous for a node app with node_modules, small enough to protect a laptop's disk.
        Limits {
            max_bytes: 4 << 30,
            max_entries: 500_000,
            deadline: None,
            durable: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("digest mismatch: expected {expected}, the bytes hash to {actual}; the artifact is corrupt or was replaced: upload it again")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("refused entry {entry:?}: {why}")]
    Refused { entry: String, why: String },
    #[error("archive expands beyond the limit of {limit} {what}; if this artifact is genuine, raise the limit (AETHER_FETCHER_MAX_BYTES / _MAX_ENTRIES; on a cluster `deploy-sample` sizes it and the pod's volume from the release it deploys: run it again)")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("corrupt archive: {0}")]
    Corrupt(io::Error),
    #[error("unpacking took longer than the pass deadline ({entries} entries, {bytes} bytes written by then); the volume is too slow or the artifact too large: raise --timeout")]
    Deadline { entries: u64, bytes: u64 },
    // The cause is part of the message and deliberately not `source()`: printed as a chain it
    // would appear twice.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: io::Error },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    /// Compressed bytes read (the artifact's size).
    pub compressed_bytes: u64,
    pub content_bytes: u64,
}

/// Unpacks `input` into `dest`, which must not exist yet and whose parent must exist.
pub fn unpack_verified<R: Read>(
    input: R,
    expected: &Digest,
    dest: &Path,
    limits: &Limits,
) -> Result<Unpacked, UnpackError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |err| UnpackError::Io { path, err }
    };
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest.file_name().ok_or_else(|| UnpackError::Io {
        path: dest.to_path_buf(),
        err: io::Error::other("destination has no file name"),
    })?;
    let tmp = parent.join(format!(
        "{TMP_PREFIX}{}-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    // While extracting, a helper thread flushes what has been written so far every 100 ms: the
    // disk works in parallel with decompression, and the final `syncfs` has little left.
    let extracted = if limits.durable {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let tmp = &tmp;
            s.spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    done_rx.recv_timeout(std::time::Duration::from_millis(100))
                {
                    let _ = sync_filesystem(tmp);
                }
            });
            let r = extract(input, tmp, limits);
            drop(done_tx);
            r
        })
    } else {
        extract(input, &tmp, limits)
    };
    let result = extracted.and_then(|(stats, actual)| {
        if actual != *expected {
            return Err(UnpackError::DigestMismatch {
                expected: *expected,
                actual,
            });
        }
        if limits.durable {
            sync_filesystem(&tmp).map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, dest).map_err(io_err(dest))?;
        if limits.durable {
            sync_dir(parent).map_err(io_err(parent))?;
        }
        Ok(stats)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Prefix of temporary extraction directories; anything with it is garbage after a crash.
pub const TMP_PREFIX: &str = ".tmp-";

fn extract<R: Read>(
    input: R,
    root: &Path,
    limits: &Limits,
) -> Result<(Unpacked, Digest), UnpackError> {
    let hashing = HashingReader {
        inner: input,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let limited = LimitReader {
        inner: MultiGzDecoder::new(hashing),
        left: limits.max_bytes,
        limit: limits.max_bytes,
    };
    let mut archive = tar::Archive::new(HeaderCap::new(limited));
    let mut stats = Unpacked::default();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut links: HashSet<PathBuf> = HashSet::new();
    let mut link_targets: Vec<(PathBuf, PathBuf, String)> = Vec::new();
    dirs.insert(PathBuf::new());

    let late = |stats: &Unpacked| {
        limits
            .deadline
            .is_some_and(|d| std::time::Instant::now() > d)
            .then_some(UnpackError::Deadline {
                entries: stats.entries,
                bytes: stats.content_bytes,
            })
    };
    let mut buf = vec![0u8; 256 << 10];
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if let Some(e) = late(&stats) {
            return Err(e);
        }
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnpackError::TooLarge {
                what: "entries",
                limit: limits.max_entries,
            });
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |why: &str| UnpackError::Refused {
            entry: shown.clone(),
            why: why.to_string(),
        };
        let rel = safe_relative(&entry.path().map_err(corrupt)?).map_err(&refuse)?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(refuse("empty path"));
        }
        // Writing through a symlink this archive created could land anywhere the link points.
        for anc in rel.ancestors().skip(1) {
            if links.contains(anc) {
                return Err(refuse("its path goes through a symlink in the archive"));
            }
        }
        let path = root.join(&rel);
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if !dirs.contains(&parent_rel) {
            fs::create_dir_all(root.join(&parent_rel)).map_err(io_err(&root.join(&parent_rel)))?;
            for anc in parent_rel.ancestors() {
                dirs.insert(anc.to_path_buf());
            }
        }
        let mode = entry.header().mode().map_err(corrupt)?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                // Setuid, setgid, sticky and group/other write bits never survive.
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&path)
                    .map_err(|e| dup_or_io(e, &path, &shown))?;
                // Reading fails only on a bad archive; writing only on the volume (no space,
                // permissions): the two must not be confused in the error.
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(corrupt(e)),
                    };
                    io::Write::write_all(&mut f, &buf[..n]).map_err(io_err(&path))?;
                    stats.content_bytes += n as u64;
                    if let Some(e) = late(&stats) {
                        return Err(e);
                    }
                }
            }
            tar::EntryType::Directory => {
                // A directory entry over a link would set the mode of wherever it points.
                if links.contains(&rel) {
                    return Err(refuse("a directory entry over a symlink in the archive"));
                }
                if !dirs.contains(&rel) {
                    let real_dir = || fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
                    match fs::create_dir(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && real_dir() => {}
                        Err(e) => return Err(dup_or_io(e, &path, &shown)),
                    }
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .map_err(io_err(&path))?;
                    dirs.insert(rel.clone());
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| refuse("symlink without a target"))?
                    .into_owned();
                crate::pack::check_link(&rel, &target, &|p| links.contains(p))
                    .map_err(|why| refuse(&format!("symlink to {}: {why}", target.display())))?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| dup_or_io(e, &path, &shown))?;
                links.insert(rel.clone());
                link_targets.push((rel.clone(), target, shown.clone()));
            }
            tar::EntryType::Link => return Err(refuse("hard links are not allowed")),
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refuse("device nodes are not allowed"))
            }
            tar::EntryType::Fifo => return Err(refuse("FIFOs are not allowed")),
            other => return Err(refuse(&format!("entry type {other:?} is not allowed"))),
        }
    }

    // A link checked before a later entry made one of its components a link: check them all
    // again against every link of the archive (nothing is visible before the rename).
    for (rel, target, shown) in &link_targets {
        crate::pack::check_link(rel, target, &|p| links.contains(p)).map_err(|why| {
            UnpackError::Refused {
                entry: shown.clone(),
                why: format!("symlink to {}: {why}", target.display()),
            }
        })?;
    }

    // The tar end marker may come before the end of the gzip stream: read to the end so the
    // digest covers every byte, still under the byte cap.
    let mut limited = archive.into_inner().into_inner();
    io::copy(&mut limited, &mut io::sink()).map_err(corrupt)?;
    let mut hashing = limited.inner.into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(corrupt)?;
    stats.compressed_bytes = hashing.bytes;
    Ok((stats, Digest::from_bytes(hashing.hasher.finalize().into())))
}

/// Flushes the whole filesystem holding `dir` (`syncfs`): one call that covers every file and
/// directory of the tree just written, far cheaper than an `fsync` per file; containerd does
/// the same after unpacking a layer. On tmpfs it costs nothing.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = fs::File::open(dir)?;
    // SAFETY: a valid open descriptor; syncfs only reads it.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a rename inside `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn corrupt(e: io::Error) -> UnpackError {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<LimitExceeded>()) {
        return UnpackError::TooLarge {
            what: "bytes",
            limit: inner.0,
        };
    }
    UnpackError::Corrupt(e)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UnpackError {
    let path = path.to_path_buf();
    move |err| UnpackError::Io { path, err }
}

fn dup_or_io(e: io::Error, path: &Path, shown: &str) -> UnpackError {
    if e.kind() == io::ErrorKind::AlreadyExists {
        UnpackError::Refused {
            entry: shown.to_string(),
            why: "it appears twice in the archive".into(),
        }
    } else {
        UnpackError::Io {
            path: path.to_path_buf(),
            err: e,
        }
    }
}

/// Only plain relative components; `.` is dropped, anything else refused.
fn safe_relative(p: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute"),
        }
    }
    Ok(out)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[derive(Debug)]
struct LimitExceeded(u64);
impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "archive expands beyond {} bytes", self.0)
    }
}
impl std::error::Error for LimitExceeded {}

struct LimitReader<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::other(LimitExceeded(self.limit)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
