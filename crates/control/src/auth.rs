//! Who is asking. The CLI presents the admin token; a pod presents a token that names its app:
//! in a cluster its projected ServiceAccount token (audience [`AUDIENCE`]), which the API
//! server vouches for through a TokenReview; on the local target a token derived from the
//! admin secret ([`aether_artifact::control::local_token`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aether_artifact::control::{app_of_service_account, verify_local_token, Identity, AUDIENCE};
use aether_artifact::store::Secret;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest as _, Sha256};

/// How long a reviewed token is trusted without asking again: a fetcher asks a few times per
/// release, and 50 of them at once must not become 50 TokenReviews. Well under the token's
/// own lifetime (at least 10 minutes), and a deleted ServiceAccount is refused within it.
const REVIEW_CACHE: Duration = Duration::from_secs(30);

pub enum Verifier {
    Local,
    Kube(KubeReview),
}

/// The API server, as the control plane's own ServiceAccount reaches it.
pub struct KubeReview {
    pub server: String,
    pub token_file: PathBuf,
    pub namespace: String,
    session: attohttpc::Session,
    cache: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

impl KubeReview {
    pub fn new(
        server: String,
        token_file: PathBuf,
        ca_file: PathBuf,
        namespace: String,
    ) -> Result<KubeReview> {
        use rustls_pki_types::pem::PemObject as _;
        let mut session = attohttpc::Session::new();
        session.timeout(Duration::from_secs(10));
        session.connect_timeout(Duration::from_secs(5));
        session.follow_redirects(false);
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(&ca_file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading the cluster's CA {}", ca_file.display()))?
        {
            session.add_root_certificate(cert);
        }
        Ok(KubeReview {
            server,
            token_file,
            namespace,
            session,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn review(&self, token: &str) -> Result<Identity> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((id, at)) = self.cache.lock().unwrap().get(&key) {
            if at.elapsed() < REVIEW_CACHE {
                return Ok(id.clone());
            }
        }
        let own = std::fs::read_to_string(&self.token_file).with_context(|| {
            format!(
                "reading the control plane's own token {}",
                self.token_file.display()
            )
        })?;
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [AUDIENCE]},
        });
        let resp = self
            .session
            .post(format!(
                "{}/apis/authentication.k8s.io/v1/tokenreviews",
                self.server
            ))
            .bearer_auth(own.trim())
            .json(&body)?
            .send()
            .context("asking the API server to review the token")?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().context("reading the TokenReview")?;
        if !status.is_success() {
            bail!(
                "the API server refused the TokenReview ({status}): {}; the control plane's ServiceAccount needs `create tokenreviews`",
                v["message"]
            );
        }
        let st = &v["status"];
        if st["authenticated"] != serde_json::Value::Bool(true) {
            return Err(anyhow!(Refused(format!(
                "the token was not accepted by the API server{}",
                st["error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ))));
        }
        let audiences = st["audiences"].as_array().cloned().unwrap_or_default();
        if !audiences.iter().any(|a| a == AUDIENCE) {
            return Err(anyhow!(Refused(format!(
                "the token is not for the audience {AUDIENCE}"
            ))));
        }
        let user = st["user"]["username"].as_str().unwrap_or("");
        let app = app_of_service_account(user, &self.namespace).ok_or_else(|| {
            Refused(format!(
                "{user} is not an app's fetcher in namespace {}",
                self.namespace
            ))
        })?;
        let id = Identity { app };
        let mut cache = self.cache.lock().unwrap();
        cache.retain(|_, (_, at)| at.elapsed() < REVIEW_CACHE);
        cache.insert(key, (id.clone(), Instant::now()));
        Ok(id)
    }
}

/// A token that is well-formed but not accepted (a 401, not a 503).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Verifier {
    /// The pod behind `token`; an `Err` holding [`Refused`] is the token's fault, any other is
    /// ours (the API server could not be asked).
    pub fn identify(&self, token: &str, admin: &Secret) -> Result<Identity> {
        match self {
            Verifier::Local => verify_local_token(token, admin)
                .map(|app| Identity { app })
                .ok_or_else(|| anyhow!(Refused("not a pod token of this control plane".into()))),
            Verifier::Kube(k) => k.review(token),
        }
    }
}

/// Whether `token` is the admin token (compared in constant time).
pub fn is_admin(token: &str, admin: &Secret) -> bool {
    aether_artifact::control::same_secret(admin.expose(), token)
}
