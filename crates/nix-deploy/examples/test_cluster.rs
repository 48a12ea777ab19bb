//! Embedding the deploy library: deploy this repository's flake (with the
//! fixture package set standing in for nixpkgs, since nothing can be
//! fetched here) to two throwaway nodes of the test cluster, then preview
//! again, which shows no changes.
//!
//! Run as root after `scripts/setup-test-machine`:
//! `cargo run --release -p nix-deploy --example test_cluster`

use deploy_ssh::Target;
use nix_deploy::deploy::{deploy_nodes, diff_nodes, DeployOptions, Goal, NodePlan, NodeStatus};
use nix_deploy::inventory::{build_profiles, Inventory};
use nix_deploy::nix_cli::NixCli;
use test_cluster::{Cluster, ClusterSpec, NodeKind};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let repo = test_support::repo_root();
    let nix = NixCli::new(repo.display().to_string()).with_args(test_support::flake::nix_args(
        &test_support::flake::fixture_nixpkgs(),
    ));
    let inventory = Inventory::load(&nix).await?;
    let nodes = inventory.select(&["all".to_owned()])?;
    let built = build_profiles(&nix, &nodes).await?;

    // One throwaway node per inventory node, named like it.
    let mut spec = ClusterSpec::new();
    for node in &nodes {
        spec = spec.node(&node.name, NodeKind::Trixie);
    }
    let cluster = Cluster::start(&spec)?;
    let plans: Vec<NodePlan> = nodes
        .iter()
        .map(|node| NodePlan {
            name: node.name.clone(),
            // The cluster's ssh_config names each node; in real use this is
            // the inventory's `sshUser@hostname:sshPort`.
            target: Target::new(node.name.clone()),
            profile_path: node.profile_path.clone(),
            profile: built[&node.name].clone(),
            peer_address: None,
            peer_port: None,
        })
        .collect();
    let opts = DeployOptions {
        goal: Goal::Switch,
        ssh: cluster.ssh_options(),
        ..DeployOptions::default()
    };
    for outcome in deploy_nodes(plans.clone(), &opts, None, &CancellationToken::new()).await {
        let status = match &outcome.status {
            NodeStatus::Done => "ok".to_owned(),
            NodeStatus::Failed(e) => format!("failed: {e}"),
            NodeStatus::RolledBack { reason, generation } => {
                format!("rolled back to generation {generation}: {reason}")
            }
        };
        println!(
            "{}: {status}, {} paths sent in {:.1?}",
            outcome.name, outcome.sent_paths, outcome.elapsed
        );
        let node = cluster.node(&outcome.name).ok_or("node vanished")?;
        println!(
            "  profile bin/: {}",
            node.run_ok("ls /nix/var/nix/profiles/nix-deploy/bin | tr '\\n' ' '")?
        );
    }
    for (name, diff) in diff_nodes(plans, &opts).await {
        println!(
            "{name}: preview after deploying: {}",
            match diff {
                Ok(d) if d.is_empty() => "no changes".to_owned(),
                Ok(d) => format!("{} paths to send", d.transfer_paths()),
                Err(e) => format!("error: {e}"),
            }
        );
    }
    Ok(())
}
