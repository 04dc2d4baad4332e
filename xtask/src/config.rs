//! Where settings come from: flags, then `AETHER_*` environment variables, then the project's
//! config file `.aether/config.json` (written by bootstrap, mode 0600), then defaults.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aether_artifact::store::{PartialStore, Secret};
use anyhow::{Context, Result};

/// Flags shared by every command.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Global {
    /// Project directory holding `.aether/` (state, config, local target data).
    #[arg(long, global = true, env = "AETHER_PROJECT_DIR")]
    pub project_dir: Option<PathBuf>,
    /// S3 endpoint, e.g. http://127.0.0.1:30900 [env: AETHER_S3_ENDPOINT]
    #[arg(long, global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 bucket [env: AETHER_S3_BUCKET]
    #[arg(long, global = true)]
    pub s3_bucket: Option<String>,
    /// S3 region [env: AETHER_S3_REGION]
    #[arg(long, global = true)]
    pub s3_region: Option<String>,
}

impl Global {
    /// The project directory: the flag, else the workspace this xtask was built from.
    pub fn project_dir(&self) -> PathBuf {
        self.project_dir.clone().unwrap_or_else(crate::project_root)
    }

    /// The database URL the host uses (`AETHER_DATABASE_URL`, else bootstrap's config).
    pub fn database_url(&self) -> Result<Option<Secret>> {
        if let Ok(u) = std::env::var("AETHER_DATABASE_URL") {
            if !u.is_empty() {
                return Ok(Some(Secret::new(u)));
            }
        }
        Ok(ProjectConfig::load(&self.state_dir())?.database_url)
    }

    /// `.aether/`: keys, the embedded store's data, logs. Created 0700 (and tightened to it):
    /// only its owner may read it, whatever the umask.
    pub fn state_dir(&self) -> PathBuf {
        let d = self.project_dir().join(".aether");
        let _ = private_dir(&d);
        d
    }

    /// Store settings layered flags > environment > config file. Credentials are deliberately
    /// not flags: a flag would put them on a command line, visible in `ps` and shell history.
    pub fn store_layers(&self) -> Result<PartialStore> {
        let flags = PartialStore {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            bucket: self.s3_bucket.clone(),
            ..Default::default()
        };
        Ok(flags
            .or(PartialStore::from_env())
            .or(ProjectConfig::load(&self.state_dir())?.store))
    }
}

/// `.aether/config.json`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    #[serde(default)]
    pub store: PartialStore,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret>,
    /// The store's endpoint as pods reach it (in-cluster DNS name), when it differs from ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_store_endpoint: Option<String>,
    /// The control plane: as this machine reaches it (NodePort), as pods reach it (its
    /// Service), and the CLI's admin token (written by bootstrap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlConfig>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    pub url: Option<String>,
    pub cluster_url: Option<String>,
    pub admin_token: Secret,
}

impl ProjectConfig {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("config.json")
    }

    pub fn load(state_dir: &Path) -> Result<ProjectConfig> {
        let p = Self::path(state_dir);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| {
                format!(
                    "reading {}: fix or delete it, then run `cargo xtask bootstrap`",
                    p.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProjectConfig::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Written with mode 0600 from the start and renamed into place.
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        fs::create_dir_all(state_dir)?;
        let p = Self::path(state_dir);
        write_private(&p, &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", p.display()))
    }
}

/// Writes a file only its owner can read: created with mode 0600 (never world-readable, not even
/// briefly) under a temporary name, then renamed into place.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// `bytes` random bytes from the kernel, as hex: generated credentials.
pub fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Creates `dir` (0700) or takes group and other access away from it. Errors are left to the
/// first real use of the directory, which names the path.
pub(crate) fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::metadata(dir) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        Ok(_) => Ok(()),
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
    }
}
