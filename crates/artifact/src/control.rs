//! The control plane's contract (`aether-control`): its routes, the JSON it speaks, how a pod
//! proves which app it belongs to, and a blocking client. The server, the xtask and the fetcher
//! all take them from here, so the API is written down once, as Rust types.
//!
//! Routes (every error is `{"error": …, "cause": …}` with a 4xx/5xx status):
//! - `GET  /healthz`
//! - `GET  /v1/apps`: every app with its latest release (admin)
//! - `GET  /v1/apps/<app>/releases`: the app's releases, newest first (admin)
//! - `GET  /v1/apps/<app>/releases/<digest>` (admin)
//! - `POST /v1/apps/<app>/releases`: register an upload, idempotent per digest (admin)
//! - `POST /v1/apps/<app>/read-urls`: short-lived GET URLs for the app's own objects, for the
//!   app's pods alone (a pod token, see [`Identity`])

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::store::{ErrorKind, Secret, StoreError};
use crate::{AppName, Digest};

/// Where the fetcher and the CLI find the control plane (unset: it is not used, and everything
/// talks to the store directly as before).
pub const ENV_URL: &str = "AETHER_CONTROL_URL";
/// The file holding the pod's token (re-read on each request: the kubelet rotates it).
pub const ENV_TOKEN_FILE: &str = "AETHER_CONTROL_TOKEN_FILE";
/// The server's secret: the CLI's bearer token, and the key local pod tokens derive from.
pub const ENV_ADMIN_TOKEN: &str = "AETHER_CONTROL_ADMIN_TOKEN";
/// The audience of the projected ServiceAccount token a pod presents: a token minted for the
/// API server is refused, and this one is useless against the API server.
pub const AUDIENCE: &str = "aether-control";
/// How long a handed-out URL stays valid: one download, not a standing credential.
pub const URL_TTL: Duration = Duration::from_secs(120);
/// The in-cluster Service's NodePort, for the CLI on a machine outside the cluster.
pub const NODE_PORT: u16 = 30901;
pub const PORT: u16 = 8090;

/// The server's settings from the environment (its flags mirror them; secrets come only from
/// here). The xtask starts it with these, so they live in the contract.
pub struct ControlEnv;

impl ControlEnv {
    pub const LISTEN: &'static str = "AETHER_CONTROL_LISTEN";
    /// `sqlite:<path>` or `postgres://user:password@host/db`; holds a password, so never a flag.
    pub const DATABASE_URL: &'static str = "AETHER_CONTROL_DATABASE_URL";
    /// `local` (derived pod tokens) or `kube` (TokenReview of projected ServiceAccount tokens).
    pub const AUTH: &'static str = "AETHER_CONTROL_AUTH";
    /// The namespace whose apps' ServiceAccounts are accepted (`kube`).
    pub const NAMESPACE: &'static str = "AETHER_CONTROL_NAMESPACE";
    pub const KUBE_API: &'static str = "AETHER_CONTROL_KUBE_API";
    pub const KUBE_TOKEN_FILE: &'static str = "AETHER_CONTROL_KUBE_TOKEN_FILE";
    pub const KUBE_CA_FILE: &'static str = "AETHER_CONTROL_KUBE_CA_FILE";
    pub const DERIVE_READ_KEYS: &'static str = "AETHER_CONTROL_DERIVE_READ_KEYS";
    pub const WORKERS: &'static str = "AETHER_CONTROL_WORKERS";
    pub const DB_WAIT: &'static str = "AETHER_CONTROL_DB_WAIT";
}

/// One registered upload: what it is, where it came from, who published it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseEntry {
    pub app: String,
    pub digest: Digest,
    /// 1 for the app's first registered upload, then +1 per new digest.
    pub seq: u64,
    /// The dependency layer's digest, when the app has one.
    pub deps: Option<Digest>,
    /// Compressed bytes of the app layer.
    pub bytes: u64,
    /// Who registered it (`user@host`, or the CI job).
    pub published_by: String,
    pub published_at_ms: u64,
    pub git_commit: Option<String>,
    /// The provenance record, exactly as stored beside the artifact.
    pub provenance: String,
    /// Its minisign signature, when it was signed.
    pub signature: Option<String>,
}

/// What `hot-upload` sends: the entry without what the server assigns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub digest: Digest,
    pub deps: Option<Digest>,
    pub bytes: u64,
    pub published_by: String,
    pub git_commit: Option<String>,
    pub provenance: String,
    pub signature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    pub entry: ReleaseEntry,
    /// False when the digest was registered before (the first registration stands).
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSummary {
    pub app: String,
    pub releases: u64,
    pub latest: ReleaseEntry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadUrls {
    /// Object keys, each under `artifacts/<app>/`.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Urls {
    /// One presigned GET URL per asked key, in the asked order.
    pub urls: Vec<String>,
    pub expires_in_secs: u64,
}

/// Every error the API returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    pub error: String,
    /// What went wrong, in a word a program can match: `unauthenticated`, `forbidden`,
    /// `not-found`, `bad-request`, `database`, `unavailable`.
    pub cause: String,
}

/// Who a pod token says its bearer is: the fetcher of one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub app: AppName,
}

/// The ServiceAccount whose token identifies `app`'s pods (the manifests use the same name).
pub fn service_account(app: &AppName) -> String {
    format!("{app}-fetcher")
}

/// The app a ServiceAccount user name (`system:serviceaccount:<ns>:<name>`) belongs to, when
/// it is in `namespace` and is an app's fetcher account.
pub fn app_of_service_account(username: &str, namespace: &str) -> Option<AppName> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    if ns != namespace {
        return None;
    }
    AppName::parse(name.strip_suffix("-fetcher")?).ok()
}

/// The local target's pod token for `app`: `local.<app>.<HMAC-SHA256(secret, app)>`. Local pods
/// are processes of the developer's own user, so a derived token (as the store's read keys
/// are) proves as much as a ServiceAccount token would, and needs no list to be kept.
pub fn local_token(app: &AppName, secret: &Secret) -> Secret {
    Secret::new(format!("local.{app}.{}", local_mac(app, secret)))
}

fn local_mac(app: &AppName, secret: &Secret) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("aether-control/v1/{app}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The app a local token was made for, when `secret` made it.
pub fn verify_local_token(token: &str, secret: &Secret) -> Option<AppName> {
    let rest = token.strip_prefix("local.")?;
    let (app, mac) = rest.split_once('.')?;
    let app = AppName::parse(app).ok()?;
    same_secret(&local_mac(&app, secret), mac).then_some(app)
}

/// Whether a presented secret equals the expected one, in time that does not depend on where
/// they differ: the comparison must not say how much of a guess was right.
pub fn same_secret(expected: &str, presented: &str) -> bool {
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A blocking client of the control plane, for the CLI (admin token) and the fetcher (pod
/// token, re-read from its file on every request).
pub struct Client {
    base: String,
    token: Token,
    session: attohttpc::Session,
}

enum Token {
    Fixed(Secret),
    File(std::path::PathBuf),
}

impl Client {
    pub fn with_token(base: &str, token: Secret, timeout: Duration) -> Client {
        Self::new(base, Token::Fixed(token), timeout)
    }

    pub fn with_token_file(base: &str, file: &Path, timeout: Duration) -> Client {
        Self::new(base, Token::File(file.to_path_buf()), timeout)
    }

    fn new(base: &str, token: Token, timeout: Duration) -> Client {
        let mut session = attohttpc::Session::new();
        session.timeout(timeout);
        session.connect_timeout(timeout.min(Duration::from_secs(5)));
        session.follow_redirects(false);
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            session,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn health(&self) -> Result<(), ControlError> {
        self.call::<serde_json::Value>("checking health", attohttpc::Method::GET, "/healthz", None)
            .map(drop)
    }

    pub fn apps(&self) -> Result<Vec<AppSummary>, ControlError> {
        self.call("listing apps", attohttpc::Method::GET, "/v1/apps", None)
    }

    pub fn releases(&self, app: &AppName) -> Result<Vec<ReleaseEntry>, ControlError> {
        let path = format!("/v1/apps/{app}/releases");
        self.call("listing releases", attohttpc::Method::GET, &path, None)
    }

    pub fn release(&self, app: &AppName, digest: &Digest) -> Result<ReleaseEntry, ControlError> {
        let path = format!("/v1/apps/{app}/releases/{digest}");
        self.call("reading a release", attohttpc::Method::GET, &path, None)
    }

    pub fn register(&self, app: &AppName, r: &Register) -> Result<Registered, ControlError> {
        let path = format!("/v1/apps/{app}/releases");
        let body = serde_json::to_vec(r).expect("a Register serialises");
        self.call(
            "registering a release",
            attohttpc::Method::POST,
            &path,
            Some(body),
        )
    }

    pub fn read_urls(&self, app: &AppName, keys: &[String]) -> Result<Urls, ControlError> {
        let path = format!("/v1/apps/{app}/read-urls");
        let body = serde_json::to_vec(&ReadUrls {
            keys: keys.to_vec(),
        })
        .expect("ReadUrls serialises");
        self.call(
            "asking for read URLs",
            attohttpc::Method::POST,
            &path,
            Some(body),
        )
    }

    fn call<T: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        method: attohttpc::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ControlError> {
        let err = |kind, detail: String| ControlError {
            op: op.to_string(),
            base: self.base.clone(),
            kind,
            detail,
        };
        let token = match &self.token {
            Token::Fixed(t) => t.clone(),
            Token::File(p) => Secret::new(
                std::fs::read_to_string(p)
                    .map_err(|e| {
                        err(
                            ControlErrorKind::Token,
                            format!("reading the pod token {}: {e}", p.display()),
                        )
                    })?
                    .trim(),
            ),
        };
        let url = format!("{}{path}", self.base);
        let req = match method {
            attohttpc::Method::POST => self.session.post(&url),
            _ => self.session.get(&url),
        }
        .bearer_auth(token.expose());
        let resp = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .bytes(b)
                .send(),
            None => req.send(),
        }
        .map_err(|e| err(ControlErrorKind::Unreachable, e.to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .map_err(|e| err(ControlErrorKind::Unreachable, e.to_string()))?;
        if !status.is_success() {
            let (kind, detail) = match serde_json::from_str::<ApiError>(&text) {
                Ok(e) => (ControlErrorKind::from_cause(&e.cause), e.error),
                Err(_) => (ControlErrorKind::Other, format!("HTTP {status}: {text}")),
            };
            return Err(err(kind, detail));
        }
        serde_json::from_str(&text)
            .map_err(|e| err(ControlErrorKind::Other, format!("unreadable answer: {e}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlErrorKind {
    Unreachable,
    /// The pod's token file could not be read.
    Token,
    Unauthenticated,
    Forbidden,
    NotFound,
    Other,
}

impl ControlErrorKind {
    fn from_cause(cause: &str) -> ControlErrorKind {
        match cause {
            "unauthenticated" => ControlErrorKind::Unauthenticated,
            "forbidden" => ControlErrorKind::Forbidden,
            "not-found" => ControlErrorKind::NotFound,
            "unavailable" => ControlErrorKind::Unreachable,
            _ => ControlErrorKind::Other,
        }
    }

    fn hint(self) -> &'static str {
        match self {
            ControlErrorKind::Unreachable => "is the control plane running? `cargo xtask doctor` checks it; pods keep serving their current release meanwhile",
            ControlErrorKind::Token => "the pod's projected ServiceAccount token is missing: check the pod's volumes",
            ControlErrorKind::Unauthenticated => "the token was not accepted: the CLI's comes from `.aether/` (bootstrap writes it), a pod's from its ServiceAccount",
            ControlErrorKind::Forbidden => "a pod may only read its own app's artifacts",
            ControlErrorKind::NotFound => "nothing is registered under that name",
            ControlErrorKind::Other => "see the control plane's log",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{op} at the control plane {base}: {detail}; {}", kind.hint())]
pub struct ControlError {
    pub op: String,
    pub base: String,
    pub kind: ControlErrorKind,
    pub detail: String,
}

impl From<ControlError> for StoreError {
    /// For the fetcher, whose downloads go through the store client: a control plane that
    /// cannot be reached is an unreachable store, one that refuses is a forbidden one.
    fn from(e: ControlError) -> StoreError {
        let kind = match e.kind {
            ControlErrorKind::Unreachable => ErrorKind::Unreachable,
            ControlErrorKind::Unauthenticated | ControlErrorKind::Token => {
                ErrorKind::BadCredentials
            }
            ControlErrorKind::Forbidden => ErrorKind::Forbidden,
            ControlErrorKind::NotFound => ErrorKind::NotFound,
            ControlErrorKind::Other => ErrorKind::Other,
        };
        StoreError {
            kind,
            op: e.op.clone(),
            endpoint: e.base.clone(),
            detail: format!("{} ({})", e.detail, e.kind.hint()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_tokens_name_their_app_and_need_the_secret() {
        let demo = AppName::parse("demo").unwrap();
        let s = Secret::new("s3cret");
        let t = local_token(&demo, &s);
        assert_eq!(verify_local_token(t.expose(), &s), Some(demo.clone()));
        assert_eq!(verify_local_token(t.expose(), &Secret::new("other")), None);
        let forged = t.expose().replace("local.demo.", "local.other.");
        assert_eq!(verify_local_token(&forged, &s), None);
        assert_eq!(verify_local_token("local.demo.", &s), None);
        assert_eq!(verify_local_token("", &s), None);
    }

    #[test]
    fn service_accounts_map_to_apps_in_one_namespace() {
        let demo = AppName::parse("demo").unwrap();
        assert_eq!(service_account(&demo), "demo-fetcher");
        let u = "system:serviceaccount:apps:demo-fetcher";
        assert_eq!(app_of_service_account(u, "apps"), Some(demo));
        assert_eq!(app_of_service_account(u, "other"), None);
        assert_eq!(
            app_of_service_account("system:serviceaccount:apps:default", "apps"),
            None
        );
        assert_eq!(app_of_service_account("admin", "apps"), None);
    }
}
