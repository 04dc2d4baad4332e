//! The object store: S3-compatible (MinIO in the cluster, the embedded s3s server locally),
//! path-style. Every request is a SigV4 presigned URL made by `rusty-s3` (signing only, no I/O)
//! and sent by one blocking `attohttpc` client with rustls, so TLS, a private CA
//! (`AETHER_S3_CA_FILE`) and per-phase timeouts are ours to set. Settings come from the same
//! `AETHER_S3_*` variables for the xtask and the fetcher, so one Secret serves both.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use attohttpc::{Method, Session, StatusCode};
use rusty_s3::{actions::S3Action, Bucket, Credentials, UrlStyle};

mod config;
mod error;
mod scoped;

pub use config::*;
pub use error::*;
pub use scoped::*;

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
    /// Where GET URLs come from when this client holds no key: someone who does (the control
    /// plane) presigns them.
    urls: Option<Box<dyn UrlSource>>,
}

/// Presigns GETs for a client without store credentials (see [`Store::through`]).
pub trait UrlSource: Send + Sync {
    fn get_url(&self, key: &str) -> Result<String, StoreError>;
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
            urls: None,
        })
    }

    /// A client that only downloads, with URLs `source` presigns (a pod that holds no store
    /// credentials). `via` names where the URLs come from, for error messages; `ca_file`
    /// verifies an `https://` store.
    pub fn through(
        via: &str,
        source: Box<dyn UrlSource>,
        ca_file: Option<std::path::PathBuf>,
        timeout: Duration,
    ) -> Result<Store, StoreError> {
        let mut store = Store::with_timeout(
            StoreConfig {
                endpoint: via.to_string(),
                region: DEFAULT_REGION.into(),
                bucket: DEFAULT_BUCKET.into(),
                access_key: String::new(),
                secret_key: Secret::default(),
                ca_file,
            },
            timeout,
        )?;
        store.cfg.endpoint = format!("the store (URLs from {via})");
        store.urls = Some(source);
        Ok(store)
    }

    fn get_url(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
        match &self.urls {
            Some(src) => src.get_url(key),
            None => Ok(self
                .bucket
                .get_object(Some(&self.creds), key)
                .sign(ttl)
                .to_string()),
        }
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
        let url = self.get_url(key, t.total.max(Duration::from_secs(60)))?;
        let err = |kind: ErrorKind, detail: String| self.error(&op, kind, detail);
        let io_kind = |e: &std::io::Error| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                Some(ErrorKind::Stalled)
            }
            _ => None,
        };
        let resp = self
            .session
            .get(&url)
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
        self.get_url(key, expiry)
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
