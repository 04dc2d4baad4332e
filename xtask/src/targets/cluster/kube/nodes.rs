//! Why a cluster cannot place pods, read from its nodes: the scheduler's event only says "1
//! node(s) had untolerated taint(s)", which names neither the taint nor the fix.

use k8s_openapi::api::core::v1::Node;

/// One line per node that would refuse a new pod of ours, each naming the cause and the fix.
/// Empty when some node takes pods (one schedulable node is enough for the loop to work).
pub fn unschedulable(nodes: &[Node]) -> Vec<String> {
    let problems: Vec<(String, Vec<String>)> = nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_else(|| "?".into());
            (name, node_problems(n))
        })
        .collect();
    if problems.iter().any(|(_, p)| p.is_empty()) {
        return Vec::new();
    }
    if nodes.is_empty() {
        return vec![
            "the cluster has no node: start the kubelet (or `cargo xtask k8s-start`)".into(),
        ];
    }
    problems
        .into_iter()
        .flat_map(|(name, p)| p.into_iter().map(move |l| format!("node {name}: {l}")))
        .collect()
}

fn node_problems(n: &Node) -> Vec<String> {
    let mut out = Vec::new();
    if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push("cordoned: run `kubectl uncordon` on it".into());
    }
    for t in n.spec.iter().flat_map(|s| s.taints.iter().flatten()) {
        // PreferNoSchedule still places pods; the pods we render tolerate nothing.
        if t.effect == "PreferNoSchedule" {
            continue;
        }
        let value = t
            .value
            .as_deref()
            .map(|v| format!("={v}"))
            .unwrap_or_default();
        out.push(format!(
            "taint {}{value}:{} ({})",
            t.key,
            t.effect,
            taint_meaning(&t.key)
        ));
    }
    if out.is_empty() {
        return out;
    }
    // The taints that follow a condition: say what the kubelet last reported, since that is
    // what has to change.
    for c in n.status.iter().flat_map(|s| s.conditions.iter().flatten()) {
        let bad = if c.type_ == "Ready" {
            c.status != "True"
        } else {
            c.status == "True"
        };
        if bad {
            out.push(format!(
                "condition {}={}: {} {}",
                c.type_,
                c.status,
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("").trim()
            ));
        }
    }
    out
}

fn taint_meaning(key: &str) -> &'static str {
    match key {
        "node.kubernetes.io/not-ready" => {
            "the node is not Ready, or the controller-manager has not yet seen it Ready: \
             check the kubelet and kube-controller-manager"
        }
        "node.kubernetes.io/unreachable" => {
            "the kubelet stopped reporting: check that it runs and reaches the API server"
        }
        "node.kubernetes.io/disk-pressure" => {
            "the kubelet is evicting for disk space: free space on the node's disk \
             (images, logs, build output)"
        }
        "node.kubernetes.io/memory-pressure" => {
            "the kubelet is evicting for memory: stop something on the node"
        }
        "node.kubernetes.io/pid-pressure" => "the node is short of process ids",
        "node.kubernetes.io/network-unavailable" => {
            "the node's pod network is not configured: check the CNI plugin"
        }
        "node.kubernetes.io/unschedulable" => "cordoned: run `kubectl uncordon` on it",
        "node-role.kubernetes.io/control-plane" | "node-role.kubernetes.io/master" => {
            "a control-plane node that takes no workloads: remove the taint on a single-node \
             cluster (`kubectl taint nodes --all node-role.kubernetes.io/control-plane-`)"
        }
        _ => "set by an administrator or an add-on: remove it, or use a node without it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_tainted_single_node_is_explained_with_its_condition() {
        let n = node(serde_json::json!({
            "metadata": {"name": "k8s-local"},
            "spec": {"taints": [
                {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"},
                {"key": "soft", "effect": "PreferNoSchedule"}
            ]},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "DiskPressure", "status": "True", "reason": "KubeletHasDiskPressure",
                 "message": "kubelet has disk pressure"},
                {"type": "MemoryPressure", "status": "False"}
            ]}
        }));
        let p = unschedulable(&[n]);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].starts_with("node k8s-local: taint node.kubernetes.io/disk-pressure:NoSchedule (the kubelet is evicting for disk space"), "{p:#?}");
        assert_eq!(
            p[1],
            "node k8s-local: condition DiskPressure=True: KubeletHasDiskPressure kubelet has disk pressure"
        );
    }

    #[test]
    fn one_schedulable_node_is_enough_and_no_node_is_a_problem() {
        let bad = node(serde_json::json!({
            "metadata": {"name": "a"}, "spec": {"unschedulable": true}
        }));
        let good = node(serde_json::json!({"metadata": {"name": "b"}, "spec": {}}));
        assert!(unschedulable(&[bad.clone(), good]).is_empty());
        assert_eq!(
            unschedulable(&[bad]),
            vec!["node a: cordoned: run `kubectl uncordon` on it".to_string()]
        );
        assert_eq!(unschedulable(&[]).len(), 1);
    }
}
