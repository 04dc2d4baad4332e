//! `doctor` and `bootstrap`: the platform under the apps (`crate::ops::platform`).

use anyhow::Result;

use super::Ctx;
use crate::ops::platform::{bootstrap::bootstrap, doctor::doctor};

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

/// Install or start what is missing: MicroK8s, its addons, the namespace, MinIO and Postgres.
#[derive(clap::Args)]
pub struct Bootstrap {
    /// Do not ask before steps that run sudo.
    #[arg(long)]
    yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
}

impl Bootstrap {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        bootstrap(ctx.sh, &ctx.global, &ctx.target, self.yes, self.dry_run)
    }
}
