//! The store as the cluster's pods reach it and as this machine reaches it: the configured
//! one, bootstrap's MinIO, or the embedded store listening on the node's address.

use aether_artifact::store::StoreConfig;
use anyhow::{Context, Result};

use super::*;

/// Host side of the MinIO that `bootstrap` deploys (its NodePort).
pub const DEFAULT_HOST_ENDPOINT: &str = "http://127.0.0.1:30900";

/// Cluster side of the same MinIO, as pods in `ns` reach it (bootstrap deploys it there).
pub fn minio_cluster_endpoint(ns: &str) -> String {
    format!("http://minio.{ns}.svc.cluster.local:9000")
}

impl Cluster<'_> {
    pub(super) fn embedded_dir(&self) -> std::path::PathBuf {
        self.global.state_dir().join("local")
    }

    /// The store as this machine reaches it: the configured one, else the embedded store
    /// (started, listening on the node's address too, when it is not running).
    pub(super) fn host_store_config(&self) -> Result<StoreConfig> {
        let layers = self.global.store_layers()?;
        if layers.endpoint.is_some() {
            return layers.finish().map_err(anyhow::Error::msg);
        }
        let e = match crate::embedded::running(&self.embedded_dir()) {
            Some(e) => e,
            None => crate::embedded::ensure(&self.embedded_dir(), Some(self.node_ip()?))?,
        };
        e.partial().or(layers).finish().map_err(anyhow::Error::msg)
    }

    /// The store as this machine reaches it, and its endpoint as pods reach it.
    pub(super) fn stores(&self) -> Result<(StoreConfig, String)> {
        let layers = self.global.store_layers()?;
        if layers.endpoint.is_some() {
            let host = layers.finish().map_err(anyhow::Error::msg)?;
            let pods = std::env::var("AETHER_S3_CLUSTER_ENDPOINT")
                .ok()
                .filter(|s| !s.is_empty())
                .or(
                    crate::config::ProjectConfig::load(&self.global.state_dir())?
                        .cluster_store_endpoint,
                )
                .unwrap_or_else(|| {
                    if host.endpoint == DEFAULT_HOST_ENDPOINT {
                        minio_cluster_endpoint(&self.kube.namespace)
                    } else {
                        host.endpoint.clone()
                    }
                });
            return Ok((host, pods));
        }
        let ip = self.node_ip()?;
        let e = crate::embedded::ensure(&self.embedded_dir(), Some(ip))?;
        let host = e
            .partial()
            .or(layers)
            .finish()
            .map_err(anyhow::Error::msg)?;
        Ok((host, e.endpoint(ip)))
    }

    /// The address pods reach this machine at: a node's InternalIP that is local here.
    pub(super) fn node_ip(&self) -> Result<std::net::IpAddr> {
        let nodes = self.kube.nodes()?;
        let ips: Vec<std::net::IpAddr> = nodes
            .iter()
            .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        ips.iter()
            .copied()
            .find(|ip| crate::embedded::is_local(*ip))
            .with_context(|| {
                format!(
                "no store is configured and the cluster's nodes ({}) are not on this machine, so \
                 pods cannot reach an embedded store here: run `cargo xtask bootstrap` (MinIO in \
                 the cluster) or set AETHER_S3_ENDPOINT (and AETHER_S3_CLUSTER_ENDPOINT for pods)",
                ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
            )
            })
    }
}
