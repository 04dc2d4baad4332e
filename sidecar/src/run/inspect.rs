//! `cargo xtask debug` on the app's side: a trigger line that names an inspector port starts
//! the next process with node's inspector on the pod's loopback.

use std::path::Path;

use super::launch::Plan;
use super::*;

impl Supervisor {
    /// Adds node's inspector on 127.0.0.1:`port` to the plan; its address, or `None` when the
    /// command is not node's. Only loopback: from outside the pod it is reached through a
    /// port-forward, which needs the right to forward to this pod.
    pub(super) fn with_inspector(&self, plan: &mut Plan, port: u16) -> Option<String> {
        let addr = format!("127.0.0.1:{port}");
        if self.socket.is_some() {
            // Through the loader, which opens it once the process it replaces let it go: a
            // new release while debugging keeps its inspector, and a standby can serve.
            plan.inspect = Some(addr.clone());
            return Some(addr);
        }
        let node = plan
            .command
            .first()
            .is_some_and(|p| Path::new(p).file_name() == Some("node".as_ref()));
        if !node {
            log!("the inspector needs `node` as the command; this one runs without it");
            return None;
        }
        // A cold start: the flag (while the process it replaces drains, it keeps the port and
        // this one runs without; `--warm` avoids that).
        plan.command.insert(1, format!("--inspect={addr}").into());
        Some(addr)
    }
}
