//! Compressed copies to real nodes: zstd through the node's receiver on
//! Nix 2.8 and 2.26 nodes, and each fallback (zlib when the receiver can't
//! be used, nothing when zlib can't either), every store checked with
//! `nix-store --verify --check-contents` afterwards. Nothing here is timed.

use std::sync::Arc;

use deploy_ssh::{SshSession, Target, DEFAULT_DAEMON_COMMAND};
use nix_deploy::compress::{Receiver, ZstdControl};
use nix_deploy::copy::{
    Compression, CompressionMethod, CopyEvent, CopyOptions, CopyReport, NodeStore,
};
use nix_deploy::remote::{CommandConnector, Connector, SshConnector};
use nix_wire::daemon::{connect_local, ClientConfig, DaemonClient, LocalTransport};
use nix_wire::StorePath;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::{
    fixture_closure, fixture_closure_random, package_with_program, peers, receiver_package,
    TempStore,
};
use tokio_util::sync::CancellationToken;

async fn local() -> DaemonClient<LocalTransport> {
    DaemonClient::connect(connect_local().await.unwrap(), ClientConfig::default())
        .await
        .unwrap()
}

fn receiver() -> Receiver {
    Receiver::from_package(StorePath::parse(&receiver_package()).unwrap()).unwrap()
}

/// A connector to `node` that may open a zlib session.
async fn connector(cluster: &Cluster, node: &Node) -> SshConnector {
    let target = Target::parse(node.name()).unwrap();
    let options = cluster.ssh_options();
    let session = SshSession::connect(&target, &options).await.unwrap();
    SshConnector::new(Arc::new(session), DEFAULT_DAEMON_COMMAND).with_zlib_fallback(target, options)
}

/// Copies `root` with `options`; returns the report and every compression
/// event (method and reason).
async fn copy<C: nix_deploy::remote::Connector + 'static>(
    connector: C,
    root: &str,
    options: &CopyOptions,
) -> (CopyReport, Vec<(CompressionMethod, String)>) {
    let mut store = NodeStore::open(connector).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = store
        .copy_closure(
            &mut local().await,
            &[StorePath::parse(root).unwrap()],
            options,
            Some(tx),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    drop(store);
    let mut methods = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let CopyEvent::Compression { method, reason } = e {
            methods.push((method, reason));
        }
    }
    (report, methods)
}

fn always(receiver: Option<Receiver>) -> CopyOptions {
    CopyOptions {
        compression: Compression::Always,
        receiver,
        ..CopyOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_copies_with_zstd_to_nix_2_8_and_2_26_nodes() {
    let _measuring = test_support::timing::alone().await;
    let fx = fixture_closure(120, "zstd-nodes", 64);
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("trixie", NodeKind::Trixie)
            .node("local", NodeKind::LocalNix),
    )
    .unwrap();
    let options = CopyOptions {
        receiver: Some(receiver()),
        ..CopyOptions::default()
    };
    for node in cluster.nodes() {
        // 40 Mbit/s: the default (auto) compresses.
        node.shape(40).unwrap();
        let (report, methods) = copy(connector(&cluster, node).await, &fx.root, &options).await;
        node.unshape().unwrap();
        assert!(
            matches!(methods[0].0, CompressionMethod::Zstd { .. }),
            "{}: {methods:?}",
            node.name()
        );
        assert_eq!(report.sent_paths, fx.closure.len());
        assert_eq!(report.receiver_paths, 1, "the receiver went first");
        let compressed = report.compressed_bytes.expect("zstd counted its bytes");
        assert!(compressed < report.sent_bytes, "{report:?}");
        node.verify_store().unwrap();
        assert_eq!(node.store_closure(&fx.root).unwrap(), fx.closure);
        let rerun = copy(connector(&cluster, node).await, &fx.root, &options)
            .await
            .0;
        assert_eq!((rerun.sent_paths, rerun.receiver_paths), (0, 0));
    }
}

/// A connector spawning `peer`'s `nix-daemon --stdio` on `store`.
fn daemon_connector(store: &TempStore, peer: &test_support::Peer) -> CommandConnector {
    let daemon = store.daemon_command(peer);
    let std = daemon.as_std();
    let program = std.get_program().to_owned();
    let args: Vec<_> = std.get_args().map(ToOwned::to_owned).collect();
    CommandConnector::new(peer.name.clone(), move || {
        let mut c = tokio::process::Command::new(&program);
        c.args(&args);
        c
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_streams_import_into_both_nix_versions_through_a_local_receiver() {
    let _measuring = test_support::timing::shared().await;
    let fx = fixture_closure(80, "zstd-local", 32);
    for peer in peers() {
        let store = TempStore::new();
        let connector = daemon_connector(&store, &peer);
        let (report, methods) = copy(connector, &fx.root, &always(Some(receiver()))).await;
        assert!(
            matches!(methods[0].0, CompressionMethod::Zstd { .. }),
            "{}: {methods:?}",
            peer.name
        );
        assert_eq!(report.sent_paths, fx.closure.len());
        store.verify(&peer);
        assert_eq!(store.closure(&peer, &fx.root), fx.closure);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_stream_striped_over_three_channels_imports_into_both_nix_versions() {
    let _measuring = test_support::timing::shared().await;
    let fx = fixture_closure_random(60, "zstd-striped", 256);
    for peer in peers() {
        let store = TempStore::new();
        let plain = daemon_connector(&store, &peer);
        // Each connection: one lead receiver and two joiners, meeting in
        // a private directory under TMPDIR.
        let striped = plain
            .zstd(&receiver(), ZstdControl::fixed(3), 3)
            .await
            .unwrap();
        let options = CopyOptions {
            compression: Compression::Never,
            ..CopyOptions::default()
        };
        let (report, _) = copy(striped, &fx.root, &options).await;
        assert_eq!(report.sent_paths, fx.closure.len(), "{}", peer.name);
        store.verify(&peer);
        assert_eq!(store.closure(&peer, &fx.root), fx.closure);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_round_trip_stripes_each_zstd_connection_over_several_channels() {
    let _measuring = test_support::timing::alone().await;
    // 40 MiB no compressor shrinks: far more than the channels' windows
    // hold, so the receiver's lead waits on each stripe in turn while the
    // others are full (a stripe whose joiner stalled sshd hung here).
    let fx = fixture_closure_random(160, "zstd-far", 256);
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("trixie", NodeKind::Trixie)
            .node("local", NodeKind::LocalNix),
    )
    .unwrap();
    let options = CopyOptions {
        receiver: Some(receiver()),
        ..CopyOptions::default()
    };
    for node in cluster.nodes() {
        // 60 ms: a 2 MiB window carries 33 MiB/s a channel: compress, and
        // give each connection the channels for the link.
        node.delay(std::time::Duration::from_millis(60)).unwrap();
        let (report, methods) = copy(connector(&cluster, node).await, &fx.root, &options).await;
        node.delay(std::time::Duration::ZERO).unwrap();
        let (method, reason) = &methods[0];
        assert!(
            matches!(method, CompressionMethod::Zstd { .. }),
            "{}: {methods:?}",
            node.name()
        );
        let stripes: usize = reason
            .rsplit_once(" zstd connections of ")
            .and_then(|(_, r)| r.strip_suffix(" channels"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{reason}"));
        assert!(stripes >= 2, "{}: {reason}", node.name());
        assert_eq!(report.sent_paths, fx.closure.len());
        node.verify_store().unwrap();
        assert_eq!(node.store_closure(&fx.root).unwrap(), fx.closure);
        // Nothing is left behind in the node's /tmp.
        let left = node
            .run_ok("ls -d /tmp/nix-deploy-receive-* 2>/dev/null || true")
            .unwrap();
        assert_eq!(left.trim(), "", "{}", node.name());
    }
}

/// The first compression event's method and reason, after a copy of a
/// fresh closure to `node` with compression forced on.
async fn fallback(
    cluster: &Cluster,
    node: &Node,
    seed: &str,
    receiver: Option<Receiver>,
) -> (CopyReport, CompressionMethod, String) {
    let fx = fixture_closure(30, seed, 16);
    let (report, methods) = copy(connector(cluster, node).await, &fx.root, &always(receiver)).await;
    assert_eq!(report.sent_paths, fx.closure.len());
    node.verify_store().unwrap();
    assert_eq!(node.store_closure(&fx.root).unwrap(), fx.closure);
    let (method, reason) = methods.into_iter().next().expect("a compression event");
    (report, method, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_receiver_copies_use_zlib_and_without_zlib_nothing() {
    let _measuring = test_support::timing::shared().await;
    let cluster = Cluster::start(&ClusterSpec::uniform(NodeKind::Trixie, 1)).unwrap();
    let node = &cluster.nodes()[0];

    // No receiver at all.
    let (_, method, reason) = fallback(&cluster, node, "fallback-none", None).await;
    assert_eq!(method, CompressionMethod::Zlib, "{reason}");
    assert!(reason.contains("no receiver"), "{reason}");

    // A receiver for another machine: not even pushed.
    let mut program = std::fs::read(receiver().program()).unwrap();
    program[18..20].copy_from_slice(&0xb7u16.to_le_bytes());
    let arm = package_with_program("nix-deploy-receive-aarch64", &program, true);
    let arm = Receiver::from_package(StorePath::parse(&arm).unwrap()).unwrap();
    assert_eq!(arm.machine(), "aarch64");
    let (report, method, reason) = fallback(&cluster, node, "fallback-arm", Some(arm)).await;
    assert_eq!(method, CompressionMethod::Zlib, "{reason}");
    assert!(reason.contains("built for aarch64"), "{reason}");
    assert_eq!(report.receiver_paths, 0);

    // A receiver without exec permission: pushed, then refused by the node.
    let program = std::fs::read(receiver().program()).unwrap();
    let inert = package_with_program("nix-deploy-receive-noexec", &program, false);
    let inert = Receiver::from_package(StorePath::parse(&inert).unwrap()).unwrap();
    let (report, method, reason) = fallback(&cluster, node, "fallback-noexec", Some(inert)).await;
    assert_eq!(method, CompressionMethod::Zlib, "{reason}");
    assert!(reason.contains("does not run on the node"), "{reason}");
    assert_eq!(report.receiver_paths, 1);

    // And an sshd that won't compress: plain, saying why.
    std::fs::write(
        node.root()
            .join("etc/ssh/sshd_config.d/no-compression.conf"),
        "Compression no\n",
    )
    .unwrap();
    node.stop_sshd();
    node.start_sshd().unwrap();
    let (_, method, reason) = fallback(&cluster, node, "fallback-nozlib", None).await;
    assert_eq!(method, CompressionMethod::None, "{reason}");
    assert!(reason.contains("does not compress"), "{reason}");
}
