//! The object store: S3-compatible (MinIO in the cluster, the embedded s3s server locally),
//! path-style, SigV4-signed by `rust-s3`'s blocking client. Settings come from the same
//! `AETHER_S3_*` variables for the xtask and the fetcher, so one Secret serves both.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use s3::creds::Credentials;
use s3::error::S3Error;
use s3::{Bucket, BucketConfiguration, Region};

pub const ENV_ENDPOINT: &str = "AETHER_S3_ENDPOINT";
pub const ENV_REGION: &str = "AETHER_S3_REGION";
pub const ENV_BUCKET: &str = "AETHER_S3_BUCKET";
pub const ENV_ACCESS_KEY: &str = "AETHER_S3_ACCESS_KEY";
pub const ENV_SECRET_KEY: &str = "AETHER_S3_SECRET_KEY";

pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_BUCKET: &str = "aether-artifacts";

/// Artifacts above this size go up as multipart, so a progress bar can move and a failed part
/// costs one part, not the whole upload.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
pub const PART_SIZE: usize = 8 << 20;

/// A secret that never prints.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Complete store settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreConfig {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: Secret,
}

/// Store settings from one source; sources are layered with [`PartialStore::or`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialStore {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
}

impl PartialStore {
    pub fn from_env() -> PartialStore {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> PartialStore {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        PartialStore {
            endpoint: get(ENV_ENDPOINT),
            region: get(ENV_REGION),
            bucket: get(ENV_BUCKET),
            access_key: get(ENV_ACCESS_KEY),
            secret_key: get(ENV_SECRET_KEY).map(Secret),
        }
    }

    /// Fields of `self` win; missing ones come from `lower`.
    pub fn or(self, lower: PartialStore) -> PartialStore {
        PartialStore {
            endpoint: self.endpoint.or(lower.endpoint),
            region: self.region.or(lower.region),
            bucket: self.bucket.or(lower.bucket),
            access_key: self.access_key.or(lower.access_key),
            secret_key: self.secret_key.or(lower.secret_key),
        }
    }

    pub fn finish(self) -> Result<StoreConfig, String> {
        let missing = |what: &str, env: &str| {
            format!("no store {what} configured: set {env}, pass it as a flag, or run `cargo xtask bootstrap` (which writes .aether/config.json)")
        };
        let cfg = StoreConfig {
            endpoint: self
                .endpoint
                .ok_or_else(|| missing("endpoint", ENV_ENDPOINT))?,
            region: self.region.unwrap_or_else(|| DEFAULT_REGION.into()),
            bucket: self.bucket.unwrap_or_else(|| DEFAULT_BUCKET.into()),
            access_key: self
                .access_key
                .ok_or_else(|| missing("access key", ENV_ACCESS_KEY))?,
            secret_key: self
                .secret_key
                .ok_or_else(|| missing("secret key", ENV_SECRET_KEY))?,
        };
        if !(cfg.endpoint.starts_with("http://") || cfg.endpoint.starts_with("https://")) {
            return Err(format!(
                "store endpoint {:?} must start with http:// or https://",
                cfg.endpoint
            ));
        }
        validate_bucket_name(&cfg.bucket)?;
        Ok(cfg)
    }
}

/// S3 bucket naming rules, checked before any request so the error is immediate and precise.
pub fn validate_bucket_name(b: &str) -> Result<(), String> {
    let ok_chars = b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    let ends_ok = b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if (3..=63).contains(&b.len()) && ok_chars && ends_ok && !b.contains("..") {
        Ok(())
    } else {
        Err(format!("invalid bucket name {b:?}: use 3-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit (set {ENV_BUCKET})"))
    }
}

/// What went wrong talking to the store, distinguishable by callers and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Unreachable,
    /// Connected, then no byte arrived for the stall timeout.
    Stalled,
    /// The download was fine, but whatever it was streamed into stopped taking bytes (the
    /// caller's own failure is the cause to report).
    Sink,
    BadCredentials,
    Forbidden,
    NoSuchBucket,
    InvalidBucketName,
    NotFound,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{op} at {endpoint}: {detail}; {}", hint(*kind))]
pub struct StoreError {
    pub kind: ErrorKind,
    pub op: String,
    pub endpoint: String,
    pub detail: String,
}

fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unreachable => "is the store running? check the endpoint (AETHER_S3_ENDPOINT) or run `cargo xtask doctor`",
        ErrorKind::Stalled => "the connection went silent (a firewall dropping packets, or an overloaded store); retrying",
        ErrorKind::Sink => "the receiving side stopped reading; its own error says why",
        ErrorKind::BadCredentials => "the store rejected the credentials: check AETHER_S3_ACCESS_KEY/AETHER_S3_SECRET_KEY or .aether/config.json",
        ErrorKind::Forbidden => "the credentials are valid but lack permission for this bucket or key: grant s3:GetObject/PutObject/ListBucket",
        ErrorKind::NoSuchBucket => "the bucket does not exist: `cargo xtask hot-upload` creates it, or set AETHER_S3_BUCKET",
        ErrorKind::InvalidBucketName => "fix AETHER_S3_BUCKET",
        ErrorKind::NotFound => "upload it first with `cargo xtask hot-upload`",
        ErrorKind::Other => "see the store's message above",
    }
}

/// Timeouts of one download (see [`Store::get_with_timeouts`]).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub stall: Duration,
    pub total: Duration,
}

pub struct Store {
    bucket: Box<Bucket>,
    cfg: StoreConfig,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("cfg", &self.cfg).finish()
    }
}

/// How many times rust-s3 retries idempotent requests (process-wide; default 1 with a 1 s
/// pause). The fetcher sets 0: it has its own backoff.
pub fn set_retries(n: u8) {
    s3::set_retries(n);
}

impl Store {
    pub fn new(cfg: StoreConfig) -> Result<Store, StoreError> {
        Self::with_timeout(cfg, Duration::from_secs(60))
    }

    pub fn with_timeout(cfg: StoreConfig, timeout: Duration) -> Result<Store, StoreError> {
        let err = |e: S3Error| classify("configuring the store client", &cfg.endpoint, e);
        let region = Region::Custom {
            region: cfg.region.clone(),
            endpoint: cfg.endpoint.trim_end_matches('/').to_string(),
        };
        let creds = Credentials::new(
            Some(&cfg.access_key),
            Some(cfg.secret_key.expose()),
            None,
            None,
            None,
        )
        .map_err(|e| err(e.into()))?;
        let bucket = Bucket::new(&cfg.bucket, region, creds)
            .map_err(err)?
            .with_path_style();
        let bucket = bucket.with_request_timeout(timeout).map_err(err)?;
        Ok(Store { bucket, cfg })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// `s3://bucket/key`, for humans and other tools.
    pub fn s3_url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.cfg.bucket)
    }

    fn fail(&self, op: impl Into<String>, e: S3Error) -> StoreError {
        classify(op, &self.cfg.endpoint, e)
    }

    /// Whether the bucket exists; changes nothing (a one-key listing also proves the
    /// credentials can read it).
    pub fn bucket_exists(&self) -> Result<bool, StoreError> {
        let op = format!("checking bucket {}", self.cfg.bucket);
        match self
            .bucket
            .list_page(crate::KEY_PREFIX.into(), None, None, None, Some(1))
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = self.fail(op, e);
                if e.kind == ErrorKind::NoSuchBucket {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Creates the bucket when it is missing. Returns whether it was created.
    pub fn ensure_bucket(&self) -> Result<bool, StoreError> {
        if self.bucket_exists()? {
            return Ok(false);
        }
        let region = self.bucket.region.clone();
        let creds = Credentials::new(
            Some(&self.cfg.access_key),
            Some(self.cfg.secret_key.expose()),
            None,
            None,
            None,
        )
        .map_err(|e| self.fail("creating bucket", e.into()))?;
        match Bucket::create_with_path_style(
            &self.cfg.bucket,
            region,
            creds,
            BucketConfiguration::default(),
        ) {
            Ok(r) if r.success() => Ok(true),
            Ok(r) if r.response_code == 409 => Ok(false),
            Ok(r) => Err(self.fail(
                format!("creating bucket {}", self.cfg.bucket),
                S3Error::HttpFailWithBody(r.response_code, r.response_text),
            )),
            // Someone else created it in between: "already exists/owned" is success.
            Err(S3Error::HttpFailWithBody(409, _)) => Ok(false),
            Err(e) => Err(self.fail(format!("creating bucket {}", self.cfg.bucket), e)),
        }
    }

    /// Whether an object exists (HEAD).
    pub fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.bucket.head_object(key) {
            Ok((_, 200)) => Ok(true),
            Ok((_, 404)) => Ok(false),
            Ok((_, code)) => Err(self.fail(
                format!("checking {key}"),
                S3Error::HttpFailWithBody(code, String::new()),
            )),
            Err(S3Error::HttpFailWithBody(404, _)) => Ok(false),
            Err(e) => Err(self.fail(format!("checking {key}"), e)),
        }
    }

    /// Uploads a file. S3 makes an object visible only when its PUT (or multipart completion)
    /// succeeds, and a failed multipart upload is aborted, so a failure leaves nothing under `key`.
    pub fn put_file(
        &self,
        key: &str,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), StoreError> {
        let op = format!("uploading {key}");
        let io = |e: std::io::Error| self.fail(op.clone(), S3Error::Io(e));
        let mut f = File::open(path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        if size <= MULTIPART_THRESHOLD {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).map_err(io)?;
            self.bucket
                .put_object_with_content_type(key, &buf, "application/gzip")
                .map_err(|e| self.fail(op.clone(), e))?;
            progress(size);
            return Ok(());
        }
        let init = self
            .bucket
            .initiate_multipart_upload(key, "application/gzip")
            .map_err(|e| self.fail(op.clone(), e))?;
        let upload_id = init.upload_id;
        let result = (|| {
            let mut parts = Vec::new();
            let mut buf = vec![0u8; PART_SIZE];
            let mut number = 1u32;
            loop {
                let n = read_full(&mut f, &mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                let part = self
                    .bucket
                    .put_multipart_chunk(&buf[..n], key, number, &upload_id, "application/gzip")
                    .map_err(|e| self.fail(format!("{op} (part {number})"), e))?;
                parts.push(part);
                progress(n as u64);
                number += 1;
            }
            self.bucket
                .complete_multipart_upload(key, &upload_id, parts)
                .map_err(|e| self.fail(op.clone(), e))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = self.bucket.abort_upload(key, &upload_id);
        }
        result
    }

    /// Uploads bytes with one PUT (small objects and tests).
    pub fn put_bytes(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        self.bucket
            .put_object_with_content_type(key, data, "application/gzip")
            .map(|_| ())
            .map_err(|e| self.fail(format!("uploading {key}"), e))
    }

    /// Streams an object into `w`.
    pub fn get_to_writer(&self, key: &str, w: &mut (dyn Write + Send)) -> Result<u64, StoreError> {
        let mut counting = CountingWriter { inner: w, n: 0 };
        match self.bucket.get_object_to_writer(key, &mut counting) {
            Ok(200) => Ok(counting.n),
            Ok(code) => Err(self.fail(
                format!("downloading {key}"),
                S3Error::HttpFailWithBody(code, String::new()),
            )),
            Err(e) => Err(self.fail(format!("downloading {key}"), e)),
        }
    }

    /// Streams an object into `w` with timeouts of its own, so a dead network never holds the
    /// caller silently: `connect` for the TCP connection, `stall` for any wait on the next
    /// bytes (headers or body), `total` for the whole transfer. The request is a presigned GET
    /// (SigV4 in the query), made with attohttpc directly because rust-s3 sets only a total
    /// timeout.
    pub fn get_with_timeouts(
        &self,
        key: &str,
        w: &mut (dyn Write + Send),
        t: &Timeouts,
    ) -> Result<u64, StoreError> {
        let op = format!("downloading {key}");
        let url = self.presign_get(key, t.total.max(Duration::from_secs(60)))?;
        let err = |kind: ErrorKind, detail: String| StoreError {
            kind,
            op: op.clone(),
            endpoint: self.cfg.endpoint.clone(),
            detail,
        };
        let io_kind = |e: &std::io::Error| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                Some(ErrorKind::Stalled)
            }
            _ => None,
        };
        let resp = attohttpc::get(&url)
            .connect_timeout(t.connect)
            .read_timeout(t.stall)
            .timeout(t.total)
            .send()
            .map_err(|e| {
                let text = e.to_string();
                match e.kind() {
                    attohttpc_kind::Io(io) if io_kind(io).is_some() && !text.contains("onnect") => {
                        err(
                            ErrorKind::Stalled,
                            format!(
                                "connected, then no response for {:?} (stall timeout)",
                                t.stall
                            ),
                        )
                    }
                    attohttpc_kind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => err(
                        ErrorKind::Unreachable,
                        format!("no connection within {:?} (connect timeout)", t.connect),
                    ),
                    _ => classify(op.clone(), &self.cfg.endpoint, S3Error::Atto(e)),
                }
            })?;
        let (status, _, mut body) = resp.split();
        if !status.is_success() {
            let mut text = String::new();
            let _ = body.read_to_string(&mut text);
            return Err(classify(
                op.clone(),
                &self.cfg.endpoint,
                S3Error::HttpFailWithBody(status.as_u16(), text),
            ));
        }
        let mut buf = vec![0u8; 256 << 10];
        let mut n = 0u64;
        loop {
            let k = match body.read(&mut buf) {
                Ok(0) => return Ok(n),
                Ok(k) => k,
                Err(e) if io_kind(&e).is_some() => {
                    return Err(err(
                        ErrorKind::Stalled,
                        format!("no bytes for {:?} after {n} bytes (stall timeout)", t.stall),
                    ))
                }
                Err(e) => return Err(err(ErrorKind::Unreachable, format!("after {n} bytes: {e}"))),
            };
            w.write_all(&buf[..k])
                .map_err(|e| err(ErrorKind::Sink, format!("writing: {e}")))?;
            n += k as u64;
        }
    }

    /// A presigned GET URL, valid for `expiry` (at most 7 days).
    pub fn presign_get(&self, key: &str, expiry: Duration) -> Result<String, StoreError> {
        self.bucket
            .presign_get(key, expiry.as_secs().min(604_800) as u32, None)
            .map_err(|e| self.fail(format!("presigning {key}"), e))
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

struct CountingWriter<'a> {
    inner: &'a mut (dyn Write + Send),
    n: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(b)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Maps rust-s3's errors onto what a user can act on. Error bodies are S3 XML; the code element
/// says what happened even when the HTTP status is ambiguous.
pub fn classify(op: impl Into<String>, endpoint: &str, e: S3Error) -> StoreError {
    let (kind, detail) = match &e {
        S3Error::HttpFailWithBody(code, body) => {
            let s3code = xml_code(body);
            let kind = match (s3code.as_deref(), code) {
                (
                    Some(
                        "SignatureDoesNotMatch"
                        | "InvalidAccessKeyId"
                        | "AuthorizationHeaderMalformed",
                    ),
                    _,
                ) => ErrorKind::BadCredentials,
                (Some("AccessDenied"), _) => ErrorKind::Forbidden,
                (Some("NoSuchBucket"), _) => ErrorKind::NoSuchBucket,
                (Some("InvalidBucketName"), _) => ErrorKind::InvalidBucketName,
                (Some("NoSuchKey"), _) | (None, 404) => ErrorKind::NotFound,
                // HEAD responses have no body: a 403 there is a signature or permission problem.
                (None, 403) => ErrorKind::BadCredentials,
                _ => ErrorKind::Other,
            };
            let detail = match s3code {
                Some(c) => format!("HTTP {code} {c}"),
                None => format!("HTTP {code}"),
            };
            (kind, detail)
        }
        S3Error::Io(io) => (ErrorKind::Unreachable, io.to_string()),
        S3Error::Atto(a) => {
            let text = a.to_string();
            let unreachable = matches!(
                a.kind(),
                attohttpc_kind::Io(_) | attohttpc_kind::ConnectNotSupported
            ) || text.contains("onnect")
                || text.contains("timed out")
                || text.contains("dns");
            (
                if unreachable {
                    ErrorKind::Unreachable
                } else {
                    ErrorKind::Other
                },
                text,
            )
        }
        other => (ErrorKind::Other, other.to_string()),
    };
    StoreError {
        kind,
        op: op.into(),
        endpoint: endpoint.to_string(),
        detail,
    }
}

use attohttpc::ErrorKind as attohttpc_kind;

fn xml_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(body[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_and_defaults() {
        let env = PartialStore::from_lookup(|k| match k {
            ENV_ENDPOINT => Some("http://env:9000".into()),
            ENV_SECRET_KEY => Some("env-secret".into()),
            ENV_BUCKET => Some("".into()),
            _ => None,
        });
        let flags = PartialStore {
            endpoint: Some("http://flag:1".into()),
            ..Default::default()
        };
        let file = PartialStore {
            endpoint: Some("http://file:2".into()),
            access_key: Some("file-ak".into()),
            secret_key: Some(Secret::new("file-secret")),
            ..Default::default()
        };
        let cfg = flags.or(env).or(file).finish().unwrap();
        assert_eq!(cfg.endpoint, "http://flag:1");
        assert_eq!(cfg.access_key, "file-ak");
        assert_eq!(cfg.secret_key.expose(), "env-secret");
        assert_eq!(
            cfg.bucket, DEFAULT_BUCKET,
            "an empty variable counts as unset"
        );
        assert_eq!(cfg.region, DEFAULT_REGION);
        assert!(!format!("{cfg:?}").contains("env-secret"));
    }

    #[test]
    fn missing_and_invalid_settings_say_how_to_fix() {
        let e = PartialStore::default().finish().unwrap_err();
        assert!(e.contains(ENV_ENDPOINT) && e.contains("bootstrap"), "{e}");
        let base = PartialStore {
            endpoint: Some("http://x".into()),
            access_key: Some("a".into()),
            secret_key: Some(Secret::new("s")),
            ..Default::default()
        };
        for bad in ["Bad", "ab", "-ab", "a..b", &"a".repeat(64)] {
            let e = PartialStore {
                bucket: Some(bad.into()),
                ..base.clone()
            }
            .finish()
            .unwrap_err();
            assert!(e.contains("invalid bucket name"), "{e}");
        }
        let e = PartialStore {
            endpoint: Some("localhost:9000".into()),
            ..base
        }
        .finish()
        .unwrap_err();
        assert!(e.contains("http://"), "{e}");
    }

    #[test]
    fn classify_s3_codes() {
        let body = |c: &str| {
            format!("<?xml version=\"1.0\"?><Error><Code>{c}</Code><Message>m</Message></Error>")
        };
        let k =
            |code, b: String| classify("op", "http://e", S3Error::HttpFailWithBody(code, b)).kind;
        assert_eq!(
            k(403, body("SignatureDoesNotMatch")),
            ErrorKind::BadCredentials
        );
        assert_eq!(
            k(403, body("InvalidAccessKeyId")),
            ErrorKind::BadCredentials
        );
        assert_eq!(k(403, body("AccessDenied")), ErrorKind::Forbidden);
        assert_eq!(k(404, body("NoSuchBucket")), ErrorKind::NoSuchBucket);
        assert_eq!(k(404, body("NoSuchKey")), ErrorKind::NotFound);
        assert_eq!(k(404, String::new()), ErrorKind::NotFound);
        assert_eq!(
            k(400, body("InvalidBucketName")),
            ErrorKind::InvalidBucketName
        );
        assert_eq!(k(500, body("InternalError")), ErrorKind::Other);
        let e = classify(
            "op",
            "http://e",
            S3Error::HttpFailWithBody(403, body("SignatureDoesNotMatch")),
        );
        assert!(
            e.to_string().contains("http://e") && e.to_string().contains("AETHER_S3_SECRET_KEY")
        );
    }
}
