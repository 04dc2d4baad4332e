//! `cargo xtask keygen`: an Ed25519 key pair in minisign's format, for signing uploads
//! (`AETHER_SIGNING_KEY`) and for the fetchers to check them (`AETHER_VERIFY_KEY`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::Ctx;
use crate::config::write_private;

/// Make an Ed25519 (minisign) key pair for signing uploads; the secret key is written 0600 and
/// never printed.
#[derive(clap::Args)]
pub struct Keygen {
    /// Directory for `aether.key` and `aether.pub` (default: `.aether/keys`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of key=value lines.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Made {
    secret_key_file: PathBuf,
    public_key_file: PathBuf,
    public_key: String,
}

impl Keygen {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| ctx.global.state_dir().join("keys"));
        let sk_path = dir.join("aether.key");
        let pk_path = dir.join("aether.pub");
        if sk_path.exists() {
            bail!(
                "{} already exists: keeping it (delete it first to make a new pair; signatures made with it would no longer verify)",
                sk_path.display()
            );
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let kp = minisign::KeyPair::generate_unencrypted_keypair()
            .map_err(|e| anyhow::anyhow!("generating the key pair: {e}"))?;
        let sk = kp
            .sk
            .to_box(Some("aether-dev signing key"))
            .map_err(|e| anyhow::anyhow!("encoding the secret key: {e}"))?;
        write_private(&sk_path, sk.into_string().as_bytes())?;
        let pk = kp
            .pk
            .to_box()
            .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?;
        std::fs::write(&pk_path, pk.into_string())
            .with_context(|| format!("writing {}", pk_path.display()))?;
        let made = Made {
            secret_key_file: sk_path,
            public_key_file: pk_path,
            public_key: kp.pk.to_base64(),
        };
        eprintln!(
            "wrote {} (0600; sign with AETHER_SIGNING_KEY={0}) and {} (verify with AETHER_VERIFY_KEY={1})",
            made.secret_key_file.display(),
            made.public_key_file.display()
        );
        if self.json {
            println!("{}", serde_json::to_string(&made)?);
        } else {
            println!("secret_key_file={}", made.secret_key_file.display());
            println!("public_key_file={}", made.public_key_file.display());
            println!("public_key={}", made.public_key);
        }
        Ok(())
    }
}
