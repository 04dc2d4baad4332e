//! The object store: S3-compatible (MinIO in the cluster, the embedded s3s server locally),
//! path-style. Every request is a SigV4 presigned URL made by `rusty-s3` (signing only, no I/O)
//! and sent by one blocking `attohttpc` client with rustls, so TLS, a private CA
//! (`AETHER_S3_CA_FILE`) and per-phase timeouts are ours to set. Settings come from the same
//! `AETHER_S3_*` variables for the xtask and the fetcher, so one Secret serves both.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use attohttpc::{Method, Session, StatusCode};
use rusty_s3::{actions::S3Action, Bucket, Credentials, UrlStyle};

pub const ENV_ENDPOINT: &str = "AETHER_S3_ENDPOINT";
pub const ENV_REGION: &str = "AETHER_S3_REGION";
pub const ENV_BUCKET: &str = "AETHER_S3_BUCKET";
pub const ENV_ACCESS_KEY: &str = "AETHER_S3_ACCESS_KEY";
pub const ENV_SECRET_KEY: &str = "AETHER_S3_SECRET_KEY";
/// PEM file of extra CAs to trust for an `https://` endpoint (a self-signed MinIO), on top of
/// the public web roots.
pub const ENV_CA_FILE: &str = "AETHER_S3_CA_FILE";

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
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
            ca_file: get(ENV_CA_FILE).map(PathBuf::from),
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
            ca_file: self.ca_file.or(lower.ca_file),
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
            ca_file: self.ca_file,
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
    /// The TLS handshake failed: usually a certificate no configured CA vouches for.
    Tls,
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
        ErrorKind::Tls => "the store's TLS certificate is not trusted or does not match the host: set AETHER_S3_CA_FILE to the PEM of the CA that signed it",
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
    bucket: Bucket,
    creds: Credentials,
    session: Session,
    cfg: StoreConfig,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("cfg", &self.cfg).finish()
    }
}

/// How long a presigned URL made for one of our own requests stays valid: long enough for a
/// slow part upload, short enough to be useless if it leaked.
const REQUEST_URL_TTL: Duration = Duration::from_secs(15 * 60);

impl Store {
    pub fn new(cfg: StoreConfig) -> Result<Store, StoreError> {
        Self::with_timeout(cfg, Duration::from_secs(60))
    }

    /// `timeout` bounds each request as a whole; connecting gets at most 10 s of it.
    pub fn with_timeout(cfg: StoreConfig, timeout: Duration) -> Result<Store, StoreError> {
        let err = |kind, detail: String| StoreError {
            kind,
            op: "configuring the store client".into(),
            endpoint: cfg.endpoint.clone(),
            detail,
        };
        let url = cfg
            .endpoint
            .parse()
            .map_err(|e| err(ErrorKind::Other, format!("invalid endpoint: {e}")))?;
        let bucket = Bucket::new(url, UrlStyle::Path, cfg.bucket.clone(), cfg.region.clone())
            .map_err(|e| err(ErrorKind::InvalidBucketName, e.to_string()))?;
        let creds = Credentials::new(cfg.access_key.clone(), cfg.secret_key.expose());
        let mut session = Session::new();
        session.timeout(timeout);
        session.connect_timeout(timeout.min(Duration::from_secs(10)));
        session.follow_redirects(false);
        if let Some(path) = &cfg.ca_file {
            for cert in load_ca_file(path).map_err(|e| err(ErrorKind::Tls, e))? {
                session.add_root_certificate(cert);
            }
        }
        Ok(Store {
            bucket,
            creds,
            session,
            cfg,
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// `s3://bucket/key`, for humans and other tools.
    pub fn s3_url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.cfg.bucket)
    }

    fn error(&self, op: &str, kind: ErrorKind, detail: String) -> StoreError {
        StoreError {
            kind,
            op: op.to_string(),
            endpoint: self.cfg.endpoint.clone(),
            detail,
        }
    }

    /// Sends one signed request; a non-2xx answer becomes a classified error (`ok` lists
    /// other statuses the caller handles itself).
    fn send(
        &self,
        op: &str,
        method: Method,
        url: url::Url,
        body: &[u8],
        content_type: Option<&str>,
        ok: &[u16],
    ) -> Result<attohttpc::Response, StoreError> {
        let u = url.as_str();
        let req = match method {
            Method::HEAD => self.session.head(u),
            Method::PUT => self.session.put(u),
            Method::POST => self.session.post(u),
            Method::DELETE => self.session.delete(u),
            _ => self.session.get(u),
        };
        let req = match content_type {
            Some(t) => req.header("content-type", t),
            None => req,
        };
        let resp = req.bytes(body).send().map_err(|e| self.transport(op, e))?;
        let status = resp.status();
        if status.is_success() || ok.contains(&status.as_u16()) {
            return Ok(resp);
        }
        let text = resp.text().unwrap_or_default();
        Err(classify(op, &self.cfg.endpoint, status.as_u16(), &text))
    }

    fn transport(&self, op: &str, e: attohttpc::Error) -> StoreError {
        let (kind, detail) = transport_kind(&e);
        self.error(op, kind, detail)
    }

    /// Whether the bucket exists; changes nothing (a one-key listing also proves the
    /// credentials can read it).
    pub fn bucket_exists(&self) -> Result<bool, StoreError> {
        let op = format!("checking bucket {}", self.cfg.bucket);
        let mut list = self.bucket.list_objects_v2(Some(&self.creds));
        list.with_prefix(crate::KEY_PREFIX);
        list.with_max_keys(1);
        match self.send(&op, Method::GET, list.sign(REQUEST_URL_TTL), &[], None, &[]) {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::NoSuchBucket => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the bucket when it is missing. Returns whether it was created.
    pub fn ensure_bucket(&self) -> Result<bool, StoreError> {
        if self.bucket_exists()? {
            return Ok(false);
        }
        let op = format!("creating bucket {}", self.cfg.bucket);
        let url = self.bucket.create_bucket(&self.creds).sign(REQUEST_URL_TTL);
        // Someone else created it in between: "already exists/owned" (409) is success.
        let r = self.send(&op, Method::PUT, url, &[], None, &[409])?;
        Ok(r.status() != StatusCode::CONFLICT)
    }

    /// Whether an object exists (HEAD).
    pub fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.size(key)?.is_some())
    }

    /// The object's size, `None` when it does not exist (HEAD).
    pub fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let op = format!("checking {key}");
        let url = self
            .bucket
            .head_object(Some(&self.creds), key)
            .sign(REQUEST_URL_TTL);
        let r = self.send(&op, Method::HEAD, url, &[], None, &[404])?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(r.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .or(Some(0)))
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
        let io = |e: std::io::Error| {
            self.error(&op, ErrorKind::Other, format!("{}: {e}", path.display()))
        };
        let mut f = File::open(path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        if size <= MULTIPART_THRESHOLD {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).map_err(io)?;
            self.put_bytes(key, &buf)?;
            progress(size);
            return Ok(());
        }
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.creds), key)
            .sign(REQUEST_URL_TTL);
        let text = self
            .send(&op, Method::POST, url, &[], None, &[])?
            .text()
            .map_err(|e| self.transport(&op, e))?;
        let upload_id = rusty_s3::actions::CreateMultipartUpload::parse_response(&text)
            .map_err(|e| self.error(&op, ErrorKind::Other, format!("unexpected answer: {e}")))?
            .upload_id()
            .to_string();
        let result = (|| {
            let mut etags = Vec::new();
            let mut buf = vec![0u8; PART_SIZE];
            let mut number = 1u16;
            loop {
                let n = read_full(&mut f, &mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                let part_op = format!("{op} (part {number})");
                let url = self
                    .bucket
                    .upload_part(Some(&self.creds), key, number, &upload_id)
                    .sign(REQUEST_URL_TTL);
                let r = self.send(&part_op, Method::PUT, url, &buf[..n], None, &[])?;
                let etag = r
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        self.error(&part_op, ErrorKind::Other, "the answer has no ETag".into())
                    })?
                    .to_string();
                etags.push(etag);
                progress(n as u64);
                number += 1;
            }
            let complete = self.bucket.complete_multipart_upload(
                Some(&self.creds),
                key,
                &upload_id,
                etags.iter().map(String::as_str),
            );
            let url = complete.sign(REQUEST_URL_TTL);
            let body = complete.body();
            let r = self.send(
                &op,
                Method::POST,
                url,
                body.as_bytes(),
                Some("application/xml"),
                &[],
            )?;
            // S3 may answer 200 with an error document once the parts are assembled.
            let text = r.text().map_err(|e| self.transport(&op, e))?;
            if text.contains("<Error>") {
                return Err(classify(&op, &self.cfg.endpoint, 500, &text));
            }
            Ok(())
        })();
        if result.is_err() {
            let url = self
                .bucket
                .abort_multipart_upload(Some(&self.creds), key, &upload_id)
                .sign(REQUEST_URL_TTL);
            let _ = self.send(&op, Method::DELETE, url, &[], None, &[]);
        }
        result
    }

    /// Uploads bytes with one PUT (small objects and tests).
    pub fn put_bytes(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let url = self
            .bucket
            .put_object(Some(&self.creds), key)
            .sign(REQUEST_URL_TTL);
        let op = format!("uploading {key}");
        self.send(&op, Method::PUT, url, data, Some("application/gzip"), &[])
            .map(drop)
    }

    /// Streams an object into `w`.
    pub fn get_to_writer(&self, key: &str, w: &mut (dyn Write + Send)) -> Result<u64, StoreError> {
        let t = self.session_timeouts();
        self.get_with_timeouts(key, w, &t)
    }

    fn session_timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            stall: Duration::from_secs(60),
            total: Duration::from_secs(3600),
        }
    }

    /// Streams an object into `w` with timeouts of its own, so a dead network never holds the
    /// caller silently: `connect` for the TCP connection, `stall` for any wait on the next
    /// bytes (headers or body), `total` for the whole transfer.
    pub fn get_with_timeouts(
        &self,
        key: &str,
        w: &mut (dyn Write + Send),
        t: &Timeouts,
    ) -> Result<u64, StoreError> {
        let op = format!("downloading {key}");
        let url = self
            .bucket
            .get_object(Some(&self.creds), key)
            .sign(t.total.max(Duration::from_secs(60)));
        let err = |kind: ErrorKind, detail: String| self.error(&op, kind, detail);
        let io_kind = |e: &std::io::Error| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                Some(ErrorKind::Stalled)
            }
            _ => None,
        };
        let resp = self
            .session
            .get(url.as_str())
            .connect_timeout(t.connect)
            .read_timeout(t.stall)
            .timeout(t.total)
            .send()
            .map_err(|e| {
                let text = e.to_string();
                match e.kind() {
                    attohttpc::ErrorKind::Io(io)
                        if io_kind(io).is_some() && !text.contains("onnect") =>
                    {
                        err(
                            ErrorKind::Stalled,
                            format!(
                                "connected, then no response for {:?} (stall timeout)",
                                t.stall
                            ),
                        )
                    }
                    attohttpc::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                        err(
                            ErrorKind::Unreachable,
                            format!("no connection within {:?} (connect timeout)", t.connect),
                        )
                    }
                    _ => self.transport(&op, e),
                }
            })?;
        let (status, _, mut body) = resp.split();
        if !status.is_success() {
            let mut text = String::new();
            let _ = body.read_to_string(&mut text);
            return Err(classify(&op, &self.cfg.endpoint, status.as_u16(), &text));
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
        let expiry = expiry.clamp(Duration::from_secs(1), Duration::from_secs(604_800));
        Ok(self
            .bucket
            .get_object(Some(&self.creds), key)
            .sign(expiry)
            .to_string())
    }
}

/// The certificates of a PEM file, with an error that names the file.
fn load_ca_file(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading {} ({ENV_CA_FILE}): {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} ({ENV_CA_FILE}) holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
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

/// What a failure before any HTTP status means for the user.
fn transport_kind(e: &attohttpc::Error) -> (ErrorKind, String) {
    let text = e.to_string();
    let tls_text =
        |t: &str| t.contains("certificate") || t.contains("Certificate") || t.contains("handshake");
    let kind = match e.kind() {
        attohttpc::ErrorKind::Tls(_)
        | attohttpc::ErrorKind::InvalidDNSName(_)
        | attohttpc::ErrorKind::ServerCertVerifier(_) => ErrorKind::Tls,
        attohttpc::ErrorKind::Io(io) if tls_text(&io.to_string()) => ErrorKind::Tls,
        attohttpc::ErrorKind::Io(_) | attohttpc::ErrorKind::ConnectNotSupported => {
            ErrorKind::Unreachable
        }
        _ if text.contains("onnect") || text.contains("timed out") || text.contains("dns") => {
            ErrorKind::Unreachable
        }
        _ => ErrorKind::Other,
    };
    let detail = text
        .strip_prefix("Io Error: ")
        .or_else(|| text.strip_prefix("Tls Error: "))
        .unwrap_or(&text)
        .to_string();
    (kind, detail)
}

/// Maps an S3 error answer onto what a user can act on. Error bodies are S3 XML; the code
/// element says what happened even when the HTTP status is ambiguous.
pub fn classify(op: impl Into<String>, endpoint: &str, code: u16, body: &str) -> StoreError {
    let s3code = xml_code(body);
    let kind = match (s3code.as_deref(), code) {
        (
            Some("SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AuthorizationHeaderMalformed"),
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
    StoreError {
        kind,
        op: op.into(),
        endpoint: endpoint.to_string(),
        detail,
    }
}

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
        let k = |code, b: String| classify("op", "http://e", code, &b).kind;
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
        let e = classify("op", "http://e", 403, &body("SignatureDoesNotMatch"));
        assert!(
            e.to_string().contains("http://e") && e.to_string().contains("AETHER_S3_SECRET_KEY")
        );
    }
}
