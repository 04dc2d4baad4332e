//! `doctor` and `bootstrap`: the platform under the apps (`crate::ops::platform`).

use anyhow::Result;

use super::Ctx;
use crate::ops::platform::bootstrap::{bootstrap, Options};
use crate::ops::platform::{doctor::doctor, uninstall::uninstall, StoreKind};

/// Check every prerequisite and service; print what is missing and the command that fixes it.
#[derive(clap::Args)]
pub struct Doctor {
    #[arg(long)]
    json: bool,
}

impl Doctor {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        doctor(ctx.sh, &ctx.global, &ctx.target, self.json)
    }
}

/// Install or start what is missing: on MicroK8s the snap and its addons; on any cluster the
/// namespace, an object store, Postgres and the control plane.
#[derive(clap::Args)]
pub struct Bootstrap {
    /// Do not ask before steps that run sudo.
    #[arg(long)]
    yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The object store: ours (built here, no registry pull), MinIO, or an external S3 store
    /// given by AETHER_S3_ENDPOINT and its keys.
    #[arg(long, value_enum, env = "AETHER_STORE", default_value_t)]
    store: StoreKind,
    /// StorageClass of the store's and Postgres' volumes [default: the cluster's default
    /// class; none: the data lives in the pods]
    #[arg(long, env = "AETHER_STORAGE_CLASS")]
    storage_class: Option<String>,
    /// Command that loads an image archive into the cluster's nodes ({archive} is replaced),
    /// e.g. 'kind load image-archive {archive}'.
    #[arg(long, env = "AETHER_IMAGE_IMPORT")]
    image_import: Option<String>,
    /// No control plane: apps' pods read the store with a per-app key instead of asking it
    /// for URLs, and uploads are not registered.
    #[arg(long)]
    no_control: bool,
}

impl Bootstrap {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = Options {
            yes: self.yes,
            dry_run: self.dry_run,
            store: self.store,
            storage_class: self.storage_class,
            image_import: self.image_import,
            no_control: self.no_control,
        };
        bootstrap(ctx.sh, &ctx.global, &ctx.target, &opts)
    }
}

/// Remove what bootstrap deployed (the store, Postgres, their Secrets), and its namespace when
/// bootstrap created it and nothing else is left.
#[derive(clap::Args)]
pub struct Uninstall {
    /// Also delete the store's and Postgres' volumes (their data) and the saved credentials.
    #[arg(long)]
    delete_data: bool,
}

impl Uninstall {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        uninstall(ctx.sh, &ctx.global, &ctx.target, self.delete_data)
    }
}
