//! The cluster stages of `deploy all` (k3s, then the ingress stack), built
//! from the inventory, and what `--dry-run` shows of them.

use std::sync::Arc;
use std::time::Duration;

use nix_deploy::k3s::plan::K3sNode;
use nix_deploy::k3s::{K3sStage, K3sTimeouts};
use nix_deploy::stage::Stage;

use crate::inventory_args::Resolved;

/// The k3s stage for the resolved cluster.
pub fn k3s_stage(
    resolved: &Resolved,
    ssh: deploy_ssh::SshOptions,
    timeout: Duration,
) -> Arc<K3sStage> {
    let nodes = resolved
        .nodes
        .iter()
        .map(|(node, target)| {
            let mut addresses = vec![node.hostname.clone()];
            if target.host != node.hostname {
                addresses.push(target.host.clone());
            }
            let k3s = K3sNode {
                name: node.name.clone(),
                role: node.role,
                addresses,
                profile_path: node.profile_path.clone(),
                extra_flags: node.k3s.extra_flags.clone(),
            };
            (k3s, target.clone())
        })
        .collect();
    let timeouts = K3sTimeouts {
        api: timeout,
        ready: timeout,
        ..K3sTimeouts::default()
    };
    Arc::new(K3sStage::new(
        nodes,
        resolved.cluster.k3s.ha,
        &resolved.selected,
        ssh,
        timeouts,
    ))
}

/// All cluster stages, in the order they run on a node.
pub fn stages(k3s: Arc<K3sStage>) -> Vec<Arc<dyn Stage>> {
    vec![k3s]
}

/// The dry run's text for one node: every command and file of the stages.
pub fn describe(k3s: &K3sStage, node: &str) -> Vec<String> {
    k3s.describe(node)
        .iter()
        .map(|a| format!("k3s: {a}"))
        .collect()
}
