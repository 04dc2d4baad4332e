//! Naming the real cause of a failed pass: the first error in the chain that says what went
//! wrong decides, so a full volume reads "no space", never the broken pipe it caused.

use std::io;
use std::path::Path;

use aether_artifact::store::{ErrorKind, StoreError};
use aether_artifact::unpack::UnpackError;
use aether_artifact::Cause;

pub fn classify(e: &anyhow::Error) -> Cause {
    for c in e.chain() {
        if let Some(s) = c.downcast_ref::<StoreError>() {
            return match s.kind {
                ErrorKind::Unreachable => Cause::StoreUnreachable,
                ErrorKind::Stalled => Cause::StoreStalled,
                ErrorKind::Tls => Cause::Tls,
                ErrorKind::BadCredentials => Cause::BadCredentials,
                ErrorKind::Forbidden => Cause::Forbidden,
                ErrorKind::NoSuchBucket | ErrorKind::NotFound => Cause::NotFound,
                ErrorKind::InvalidBucketName => Cause::Config,
                ErrorKind::Sink | ErrorKind::Other => Cause::Other,
            };
        }
        if let Some(u) = c.downcast_ref::<UnpackError>() {
            return match u {
                UnpackError::DigestMismatch { .. } => Cause::DigestMismatch,
                UnpackError::Refused { .. }
                | UnpackError::TooLarge { .. }
                | UnpackError::Corrupt(_) => Cause::ArchiveRefused,
                UnpackError::Deadline { .. } => Cause::Timeout,
                UnpackError::Io { err, .. } => io_cause(err).unwrap_or(Cause::Other),
            };
        }
        if let Some(c) = c.downcast_ref::<io::Error>().and_then(io_cause) {
            return c;
        }
        if let Some(s) = c.downcast_ref::<aether_artifact::provenance::SignatureError>() {
            return match s {
                aether_artifact::provenance::SignatureError::Key(_) => Cause::Config,
                _ => Cause::BadSignature,
            };
        }
        if c.is::<Overrun>() {
            return Cause::Timeout;
        }
        if c.is::<ConfigError>() {
            return Cause::Config;
        }
    }
    Cause::Other
}

pub fn io_cause(e: &io::Error) -> Option<Cause> {
    match e.raw_os_error()? {
        libc::ENOSPC | libc::EDQUOT => Some(Cause::NoSpace),
        libc::EACCES | libc::EPERM | libc::EROFS => Some(Cause::PermissionDenied),
        _ => None,
    }
}

/// A pass that finished its work after the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the sync of {digest} took longer than its {deadline:?} deadline; raise --timeout")]
pub struct Overrun {
    pub digest: String,
    pub deadline: std::time::Duration,
}

/// A missing or wrong setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What a full volume looks like, for the message: free and total bytes of the filesystem
/// holding `dir`.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed struct the call fills in.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn the_first_telling_error_wins() {
        let full = anyhow::Error::new(UnpackError::Io {
            path: "/work/.releases/x".into(),
            err: io::Error::from_raw_os_error(libc::ENOSPC),
        })
        .context("verifying abc");
        assert_eq!(classify(&full), Cause::NoSpace);
        let denied = anyhow::Error::new(io::Error::from_raw_os_error(libc::EACCES)).context("x");
        assert_eq!(classify(&denied), Cause::PermissionDenied);
        let store = anyhow::Error::new(StoreError {
            kind: ErrorKind::Stalled,
            op: "downloading".into(),
            endpoint: "http://e".into(),
            detail: "d".into(),
        });
        assert_eq!(classify(&store), Cause::StoreStalled);
        let refused = anyhow::Error::new(UnpackError::Refused {
            entry: "../x".into(),
            why: "escapes".into(),
        });
        assert_eq!(classify(&refused), Cause::ArchiveRefused);
        assert_eq!(classify(&anyhow::anyhow!("what")), Cause::Other);
        let r: Result<(), _> = Err(io::Error::other("x"));
        assert_eq!(classify(&r.context("y").unwrap_err()), Cause::Other);
        assert_eq!(aether_artifact::human_bytes(40 << 20), "40.0 MiB");
    }
}
