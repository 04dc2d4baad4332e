//! What went wrong talking to the store, by kind, with the fix for each: from S3 error codes
//! and from the transport.

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

pub(super) fn hint(kind: ErrorKind) -> &'static str {
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

/// What a failure before any HTTP status means for the user.
pub(super) fn transport_kind(e: &attohttpc::Error) -> (ErrorKind, String) {
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
