//! `deploy_nodes` on several throwaway nodes at once: closures copied and
//! profiles switched in parallel; a node that is down fails alone.

use std::time::Duration;

use deploy_ssh::{SshOptions, Target};
use nix_deploy::deploy::{deploy_nodes, DeployOptions, Goal, NodePlan, NodeStatus};
use nix_wire::StorePath;
use test_cluster::{Cluster, ClusterSpec, NodeKind};
use test_support::fixture_closure;
use tokio_util::sync::CancellationToken;

const PROFILE: &str = "/nix/var/nix/profiles/nix-deploy";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_in_parallel_and_one_down_fails_alone() {
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("a", NodeKind::Trixie)
            .node("b", NodeKind::LocalNix)
            .node("c", NodeKind::Trixie)
            .node("down", NodeKind::Trixie),
    )
    .unwrap();
    cluster.node("down").unwrap().stop_sshd();
    let roots: Vec<String> = ["a", "b", "c", "down"]
        .iter()
        .map(|n| fixture_closure(50, &format!("deploy-{n}"), 4).root)
        .collect();
    let plans: Vec<NodePlan> = cluster
        .nodes()
        .iter()
        .zip(&roots)
        .map(|(node, root)| NodePlan {
            name: node.name().to_owned(),
            target: Target::parse(node.name()).unwrap(),
            profile_path: PROFILE.to_owned(),
            profile: StorePath::parse(root).unwrap(),
            peer_address: None,
            peer_port: None,
        })
        .collect();
    let opts = DeployOptions {
        goal: Goal::Switch,
        ssh: SshOptions {
            connect_timeout: Duration::from_secs(3),
            ..cluster.ssh_options()
        },
        ..DeployOptions::default()
    };
    let outcomes = deploy_nodes(plans, &opts, None, &CancellationToken::new()).await;
    assert_eq!(outcomes.len(), 4);
    for (outcome, root) in outcomes.iter().zip(&roots) {
        let node = cluster.node(&outcome.name).unwrap();
        if outcome.name == "down" {
            let NodeStatus::Failed(e) = &outcome.status else {
                panic!("the down node cannot succeed")
            };
            assert!(e.to_string().contains(&node.ip().to_string()), "{e}");
            continue;
        }
        assert!(matches!(outcome.status, NodeStatus::Done), "{outcome:?}");
        assert_eq!(outcome.sent_paths, 51);
        let target = node.run_ok(&format!("readlink -f {PROFILE}")).unwrap();
        assert_eq!(target.trim(), root);
        let gens = node
            .run_ok(&format!("nix-env --list-generations -p {PROFILE}"))
            .unwrap();
        assert_eq!(gens.lines().count(), 1, "{gens}");
    }
}
