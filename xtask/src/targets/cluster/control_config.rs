//! The control plane bootstrap deployed, as the config file records it: where this machine and
//! the pods reach it, and the CLI's admin token.

use std::time::Duration;

use anyhow::Result;

use super::Cluster;

impl Cluster<'_> {
    pub(super) fn control_config(&self) -> Result<Option<crate::config::ControlConfig>> {
        Ok(
            crate::config::ProjectConfig::load(&self.global.state_dir())?
                .control
                .filter(|c| c.url.is_some() && c.cluster_url.is_some()),
        )
    }

    /// The admin client, when bootstrap deployed a control plane.
    pub(super) fn control_client(&self) -> Result<Option<aether_artifact::control::Client>> {
        Ok(self.control_config()?.and_then(|c| {
            Some(aether_artifact::control::Client::with_token(
                c.url.as_deref()?,
                c.admin_token,
                Duration::from_secs(10),
            ))
        }))
    }
}
