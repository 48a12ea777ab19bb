//! The copy engine over SSH to throwaway VPS nodes (network namespaces with
//! their own sshd and /nix): Debian 13's Nix 2.26 and this machine's 2.8.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use deploy_ssh::{Agent, ConfigFile, SshOptions, SshSession, Target, DEFAULT_DAEMON_COMMAND};
use nix_deploy::copy::{CopyEvent, CopyOptions, NodeStore};
use nix_deploy::remote::SshConnector;
use nix_wire::daemon::{connect_local, ClientConfig, DaemonClient, LocalTransport};
use nix_wire::StorePath;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::fixture_closure;
use tokio_util::sync::CancellationToken;

fn ssh_options(cluster: &Cluster) -> SshOptions {
    SshOptions {
        config_file: ConfigFile::Path(cluster.ssh_config().to_owned()),
        agent: Agent::Disabled,
        connect_timeout: Duration::from_secs(5),
        ..SshOptions::default()
    }
}

async fn open(cluster: &Cluster, node: &Node) -> NodeStore<SshConnector> {
    let target = Target::parse(node.name()).unwrap();
    let session = SshSession::connect(&target, &ssh_options(cluster))
        .await
        .unwrap();
    NodeStore::open(SshConnector::new(Arc::new(session), DEFAULT_DAEMON_COMMAND))
        .await
        .unwrap()
}

async fn local() -> DaemonClient<LocalTransport> {
    DaemonClient::connect(connect_local().await.unwrap(), ClientConfig::default())
        .await
        .unwrap()
}

fn node_closure(node: &Node, root: &str) -> BTreeSet<String> {
    node.run_ok(&format!("nix-store -qR {root}"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn verify(node: &Node) {
    let out = node
        .run("nix-store --verify --check-contents 2>&1")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("error") && !text.contains("modified"),
        "{}: {text}",
        node.name()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_to_nodes_of_both_nix_versions_over_ssh() {
    let fx = fixture_closure(300, "ssh", 4);
    let root = StorePath::parse(&fx.root).unwrap();
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("trixie", NodeKind::Trixie)
            .node("local", NodeKind::LocalNix),
    )
    .unwrap();
    for node in cluster.nodes() {
        let mut store = open(&cluster, node).await;
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let r = store
            .copy_closure(
                &mut local().await,
                std::slice::from_ref(&root),
                &CopyOptions::default(),
                Some(tx),
                &cancel,
            )
            .await
            .unwrap();
        assert_eq!((r.present_paths, r.sent_paths), (0, 301), "{}", node.name());
        let mut done = 0;
        while let Ok(e) = rx.try_recv() {
            if let CopyEvent::PathsDone { paths } = e {
                done += paths;
            }
        }
        assert_eq!(done, 301);
        verify(node);
        assert_eq!(node_closure(node, &fx.root), fx.closure, "{}", node.name());

        let again = store
            .copy_closure(
                &mut local().await,
                std::slice::from_ref(&root),
                &CopyOptions::default(),
                None,
                &cancel,
            )
            .await
            .unwrap();
        assert_eq!(again.sent_paths, 0, "{}", node.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_sshd_dies_mid_copy_stays_valid_and_the_rerun_completes() {
    let fx = fixture_closure(400, "ssh-kill", 256);
    let root = StorePath::parse(&fx.root).unwrap();
    let cluster = Cluster::start(&ClusterSpec::new().node("victim", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];
    node.shape(200).unwrap();
    let mut store = open(&cluster, node).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let mut local_store = local().await;
    let opts = CopyOptions::default();
    let copy = store.copy_closure(
        &mut local_store,
        std::slice::from_ref(&root),
        &opts,
        Some(tx),
        &cancel,
    );
    let killer = async {
        // Kill the node's sshd (and with it every session) once some paths are in.
        let mut done = 0;
        while let Some(e) = rx.recv().await {
            if let CopyEvent::PathsDone { paths } = e {
                done += paths;
                if done >= 20 {
                    node.stop_sshd();
                    return done;
                }
            }
        }
        done
    };
    let (result, done) = tokio::join!(copy, killer);
    let err = result.expect_err("the copy cannot succeed without its connection");
    assert!(
        err.to_string().contains(node.name()) || err.to_string().contains(&node.ip().to_string()),
        "{err}"
    );
    assert!(done >= 20);
    verify(node);
    node.unshape().unwrap();
    node.start_sshd().unwrap();

    let mut store = open(&cluster, node).await;
    let r = store
        .copy_closure(
            &mut local().await,
            &[root],
            &CopyOptions::default(),
            None,
            &cancel,
        )
        .await
        .unwrap();
    assert!(r.present_paths >= 20, "{r:?}");
    assert_eq!(r.present_paths + r.sent_paths, fx.closure.len());
    verify(node);
    assert_eq!(node_closure(node, &fx.root), fx.closure);
}
