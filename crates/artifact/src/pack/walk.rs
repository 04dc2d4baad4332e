//! What goes into an archive and in what order: the tree walked in sorted byte order, what
//! `.aetherignore` and the layout leave out, the extra files a layout writes in, and every
//! file read for exactly the size its header says.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use super::*;

pub(super) fn load_ignore(root: &Path) -> Result<ignore::gitignore::Gitignore, PackError> {
    let mut b = ignore::gitignore::GitignoreBuilder::new(root);
    let file = root.join(IGNORE_FILE);
    if file.exists() {
        if let Some(e) = b.add(&file) {
            return Err(PackError::Refused {
                path: file,
                why: format!("bad ignore pattern: {e}"),
            });
        }
    }
    b.build().map_err(|e| PackError::Refused {
        path: root.join(IGNORE_FILE),
        why: format!("bad ignore pattern: {e}"),
    })
}

pub(super) struct Stats<'a> {
    pub(super) entries: u64,
    pub(super) files: u64,
    pub(super) bytes: u64,
    pub(super) progress: &'a (dyn Fn(u64, u64) + Sync),
}

pub(super) fn extras(
    layout: &Layout,
    tar: &mut tar::Builder<&mut Chunker>,
    stats: &mut Stats,
) -> Result<(), PackError> {
    for (path, bytes) in &layout.extra {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, path, &bytes[..])
            .map_err(PackError::Output)?;
        stats.entries += 1;
        stats.files += 1;
        stats.bytes += bytes.len() as u64;
    }
    Ok(())
}

pub(super) fn walk(
    root: &Path,
    dir: &Path,
    ignore: &ignore::gitignore::Gitignore,
    layout: &Layout,
    tar: &mut tar::Builder<&mut Chunker>,
    stats: &mut Stats,
) -> Result<(), PackError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |err| PackError::Io { path, err }
    };
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    // Byte order, not locale order: the same on every machine.
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let path = dir.join(&name);
        let rel = path.strip_prefix(root).expect("walk stays under root");
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let ft = meta.file_type();
        if skipped(&path, rel, &name, ft.is_dir(), ignore)
            || (dir == root && layout.skips_root_name(&name))
        {
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        stats.entries += 1;
        let out_err = |e| PackError::Output(e);
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, rel, io::empty()).map_err(out_err)?;
            walk(root, &path, ignore, layout, tar, stats)?;
        } else if ft.is_file() {
            let size = meta.len();
            let exec = meta.permissions().mode() & 0o111 != 0;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if exec { 0o755 } else { 0o644 });
            h.set_size(size);
            let file = fs::File::open(&path).map_err(io_err(&path))?;
            let reader = ExactReader {
                inner: file.take(size),
                remaining: size,
            };
            tar.append_data(&mut h, rel, reader).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    PackError::Refused { path: path.clone(), why: "the file shrank while it was being packed; try again when nothing is writing to it".into() }
                } else {
                    PackError::Io { path: path.clone(), err: e }
                }
            })?;
            stats.bytes += size;
            stats.files += 1;
            (stats.progress)(stats.files, stats.bytes);
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err(&path))?;
            let is_link =
                |p: &Path| fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_symlink());
            check_link(rel, &target, &is_link).map_err(|why| PackError::Refused {
                path: path.clone(),
                why: format!("symlink to {}: {why}; replace it with a copy of its target, or make it a relative link that stays inside the directory", target.display()),
            })?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            tar.append_link(&mut h, rel, &target).map_err(out_err)?;
        } else {
            let kind = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device node"
            } else {
                "not a regular file, directory or symlink"
            };
            return Err(PackError::Refused {
                path,
                why: format!("it is {kind}; remove it or list it in {IGNORE_FILE}"),
            });
        }
    }
    Ok(())
}

/// Yields exactly `remaining` bytes or fails: a file that shrinks mid-pack must not produce a
/// header whose size disagrees with its data.
pub(super) struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
