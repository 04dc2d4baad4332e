//! What the tests and benchmarks need from `../shared/k8s-local`, the single-node Kubernetes
//! these machines run, beyond what any cluster gives.

use anyhow::{Context, Result};

/// `../shared/k8s-local`'s API server listens on 127.0.0.1 only, so pods cannot reach it
/// through the `kubernetes` Service, whose endpoint is the node's bridge address
/// (10.88.0.1:6443): the fetchers' watch would fail there. On that cluster the suite and the
/// bench relay the address to the API server with socat, as any real cluster's network carries
/// it; elsewhere (or when something already listens there) this does nothing.
pub struct ApiRelay(Option<std::process::Child>);

impl ApiRelay {
    pub fn start() -> Result<ApiRelay> {
        use std::net::{SocketAddr, TcpStream};
        use std::time::Duration;
        let node: SocketAddr = "10.88.0.1:6443".parse()?;
        let k8s_local = crate::project_root().join("../shared/k8s-local").exists();
        if !k8s_local
            || !crate::embedded::is_local(node.ip())
            || TcpStream::connect_timeout(&node, Duration::from_secs(1)).is_ok()
        {
            return Ok(ApiRelay(None));
        }
        let child = std::process::Command::new("socat")
            .arg(format!(
                "TCP-LISTEN:{},bind={},fork,reuseaddr",
                node.port(),
                node.ip()
            ))
            .arg("TCP:127.0.0.1:6443")
            .stdin(std::process::Stdio::null())
            // Each watch a test's namespace deletion cuts off is a "broken pipe" line.
            .stderr(std::process::Stdio::null())
            .spawn()
            .context(
                "starting socat to relay k8s-local's API server to its pods (apt install socat)",
            )?;
        let relay = ApiRelay(Some(child));
        crate::proc::wait_until(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&node, Duration::from_millis(200)).is_ok()
        })
        .context("socat did not listen on 10.88.0.1:6443")?;
        eprintln!("relaying 10.88.0.1:6443 to k8s-local's API server (pods reach it there)");
        Ok(relay)
    }
}

impl Drop for ApiRelay {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
