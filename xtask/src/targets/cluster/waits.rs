//! Waiting on a cluster until a release is served: by every pod's fetcher and app, and through
//! the Service's NodePort as the user reaches it.

use std::time::Duration;

use aether_artifact::{AppName, Digest};
use anyhow::{bail, Result};

use super::Cluster;
use crate::targets::Target;

impl Cluster<'_> {
    /// Waits until every live pod's fetcher reports `digest` live.
    pub fn wait_synced(&self, app: &AppName, digest: &Digest, timeout: Duration) -> Result<()> {
        let t0 = std::time::Instant::now();
        loop {
            let statuses = self.statuses(app)?;
            let failed: Vec<String> = statuses.iter().filter_map(|p| p.failed(digest)).collect();
            if !failed.is_empty() {
                bail!(
                    "{app} cannot serve {}: {}; fix the app and hot-patch again",
                    digest.short(),
                    failed.join("; ")
                );
            }
            let behind: Vec<String> = statuses.iter().filter_map(|p| p.behind(digest)).collect();
            if !statuses.is_empty() && behind.is_empty() {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{app} did not serve {} everywhere within {timeout:?}: {}",
                    digest.short(),
                    if statuses.is_empty() {
                        "no live pod".to_string()
                    } else {
                        behind.join("; ")
                    }
                );
            }
            // pace: a poll is a few parallel GETs through the proxy.
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until the Service's NodePort answers on this machine, as the user will curl it:
    /// kube-proxy programs a new Service's port a moment after the pods are ready.
    pub(super) fn wait_url(&self, app: &AppName, timeout: Duration) -> Result<()> {
        let Some(url) = self.url(app)? else {
            return Ok(());
        };
        let t0 = std::time::Instant::now();
        loop {
            let answered = attohttpc::get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .is_ok();
            if answered {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                bail!("every pod serves the release, but {url} does not answer within {timeout:?}: is kube-proxy running on the node?");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
