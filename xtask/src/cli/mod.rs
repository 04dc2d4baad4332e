//! One module per command; each argument struct owns its `run`, written once against the
//! [`crate::targets::Target`] trait.

pub mod bench;
pub mod cluster;
pub mod debug;
pub mod deploy_sample;
pub mod dev;
pub mod hot;
pub mod hot_upload;
pub mod image;
pub mod keygen;
pub mod package;
pub mod platform;
pub mod test;
pub mod ui;

use std::path::PathBuf;

use anyhow::Result;
use xshell::Shell;

use crate::config::Global;
use crate::targets::{Target, TargetArgs};

/// What every command gets: the shell, the global flags and the target flags.
pub struct Ctx<'a> {
    pub sh: &'a Shell,
    pub global: Global,
    pub target: TargetArgs,
}

impl Ctx<'_> {
    /// The target the flags name (printed), through the one resolver.
    pub fn target(&self) -> Box<dyn Target + '_> {
        self.target.open(self.sh, &self.global)
    }
}

/// (internal) Run the embedded S3 store.
#[derive(clap::Args)]
pub struct LocalStore {
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    port: u16,
    /// Also listen on this address (the cluster node's, for pods).
    #[arg(long)]
    also: Vec<std::net::IpAddr>,
}

impl LocalStore {
    pub fn run(self, _: &Ctx) -> Result<()> {
        crate::embedded::serve(&self.data, self.port, &self.also)
    }
}
