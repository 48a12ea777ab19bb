//! The copy engine over SSH to throwaway VPS nodes (network namespaces with
//! their own sshd and /nix): Debian 13's Nix 2.26 and this machine's 2.8.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_ssh::{ConfigFile, SshOptions, SshSession, Target, DEFAULT_DAEMON_COMMAND};
use nix_deploy::copy::{CompressionMethod, CopyEvent, CopyOptions, NodeStore, Substitute};
use nix_deploy::remote::SshConnector;
use nix_wire::daemon::{connect_local, ClientConfig, DaemonClient, LocalTransport};
use nix_wire::StorePath;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::{fixture_closure, fixture_closure_random};
use tokio_util::sync::CancellationToken;

async fn open(cluster: &Cluster, node: &Node) -> NodeStore<SshConnector> {
    let target = Target::parse(node.name()).unwrap();
    let session = SshSession::connect(&target, &cluster.ssh_options())
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
    node.store_closure(root).unwrap()
}

fn verify(node: &Node) {
    node.verify_store().unwrap();
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
                done += paths.len();
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
    // 75 MiB that no compressor shrinks: 3 s at 200 Mbit/s.
    let fx = fixture_closure_random(300, "ssh-kill", 256);
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
        // Kill the node's sshd (and with it every session) once some paths
        // went out (a batch's paths are confirmed only at its end).
        let mut started = 0;
        while let Some(e) = rx.recv().await {
            if let CopyEvent::PathStarted { .. } = e {
                started += 1;
                if started >= 100 {
                    node.stop_sshd();
                    return started;
                }
            }
        }
        started
    };
    let (result, started) = tokio::join!(copy, killer);
    let err = result.expect_err("the copy cannot succeed without its connection");
    assert!(
        err.to_string().contains(node.name()) || err.to_string().contains(&node.ip().to_string()),
        "{err}"
    );
    assert!(started >= 100);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_user_gets_told_why_and_how_to_fix_it() {
    let fx = fixture_closure(3, "ssh-untrusted", 1);
    let root = StorePath::parse(&fx.root).unwrap();
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];
    node.start_nix_daemon().unwrap();
    let target = Target::parse(&format!("deploy@{}", node.name())).unwrap();
    let session = SshSession::connect(&target, &cluster.ssh_options())
        .await
        .unwrap();
    let connector = SshConnector::new(Arc::new(session), DEFAULT_DAEMON_COMMAND);
    let mut store = NodeStore::open(connector).await.unwrap();
    let err = store
        .copy_closure(
            &mut local().await,
            &[root],
            &CopyOptions::default(),
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, nix_deploy::copy::CopyError::Untrusted { .. }),
        "{text}"
    );
    assert!(text.contains("deploy@"), "{text}");
    assert!(
        text.contains("trusted-users") && text.contains("trusted-public-keys"),
        "{text}"
    );
    assert!(
        text.contains("fixture-ssh-untrusted-"),
        "names the refused path: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_through_a_jump_host_named_in_ssh_config() {
    let fx = fixture_closure(20, "ssh-jump", 4);
    let root = StorePath::parse(&fx.root).unwrap();
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("bastion", NodeKind::Trixie)
            .node("inner", NodeKind::Trixie),
    )
    .unwrap();
    let inner = cluster.node("inner").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let mut text = std::fs::read_to_string(cluster.ssh_config()).unwrap();
    text = format!(
        "Host behind-bastion\n  HostName {}\n  ProxyJump bastion\n  User root\n  IdentityFile {}\n  UserKnownHostsFile {}\n\n{text}",
        inner.ip(),
        cluster.client_key().display(),
        cluster.known_hosts().display()
    );
    std::fs::write(&config, text).unwrap();
    let options = SshOptions {
        config_file: ConfigFile::Path(config),
        ..cluster.ssh_options()
    };
    let session = SshSession::connect(&Target::parse("behind-bastion").unwrap(), &options)
        .await
        .unwrap();
    let mut store = NodeStore::open(SshConnector::new(Arc::new(session), DEFAULT_DAEMON_COMMAND))
        .await
        .unwrap();
    let r = store
        .copy_closure(
            &mut local().await,
            &[root],
            &CopyOptions::default(),
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.sent_paths, fx.closure.len());
    verify(inner);
    assert_eq!(node_closure(inner, &fx.root), fx.closure);
    let bastion = cluster.node("bastion").unwrap();
    assert!(
        bastion.run_ok(&format!("test ! -e {}", fx.root)).is_ok(),
        "nothing landed on the jump host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_substitutes_what_its_own_cache_has_and_we_upload_the_rest() {
    let fx = fixture_closure(30, "ssh-subst", 4);
    let root = StorePath::parse(&fx.root).unwrap();
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];
    // Put the first ten paths of the chain into a binary cache on the node,
    // and nowhere else there.
    let cached: Vec<String> = (0..10)
        .map(|i| {
            fx.closure
                .iter()
                .find(|p| p.ends_with(&format!("-fixture-ssh-subst-{i}")))
                .unwrap()
                .clone()
        })
        .collect();
    let mut store = open(&cluster, node).await;
    let cancel = CancellationToken::new();
    let roots: Vec<StorePath> = cached
        .iter()
        .map(|p| StorePath::parse(p).unwrap())
        .collect();
    store
        .copy_closure(
            &mut local().await,
            &roots,
            &CopyOptions::default(),
            None,
            &cancel,
        )
        .await
        .unwrap();
    drop(store);
    node.run_ok(&format!(
        "nix --extra-experimental-features nix-command copy --to file:///var/cache/bc {all} && \
         nix-store --delete {all} && \
         printf 'substituters = file:///var/cache/bc\\nrequire-sigs = false\\n' >> /etc/nix/nix.conf",
        all = cached.join(" ")
    ))
    .unwrap();

    // By default (auto) the node is asked, answers, and fetches them.
    let mut store = open(&cluster, node).await;
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
    assert_eq!(
        (r.present_paths, r.sent_paths),
        (10, fx.closure.len() - 10),
        "{r:?}"
    );
    let mut substituted = None;
    while let Ok(e) = rx.try_recv() {
        if let CopyEvent::Substituted { paths, skipped, .. } = e {
            substituted = Some((paths, skipped));
        }
    }
    assert_eq!(substituted, Some((10, None)));
    verify(node);
    assert_eq!(node_closure(node, &fx.root), fx.closure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_is_down_or_silent_costs_at_most_the_wait_and_everything_is_uploaded() {
    let fx = fixture_closure(20, "ssh-subst-down", 4);
    let root = StorePath::parse(&fx.root).unwrap();
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];
    // A cache that accepts connections and never answers, and one that
    // refuses them.
    let silent = std::net::TcpListener::bind((node.host_ip(), 0)).unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept() {
            open.push(conn);
            if open.len() > 64 {
                break;
            }
        }
    });
    let refused = std::net::TcpListener::bind((node.host_ip(), 0)).unwrap();
    let refused_port = refused.local_addr().unwrap().port();
    drop(refused);
    let ask_within = Duration::from_secs(3);
    // Nix retries a refused download (download-attempts, with backoff),
    // so both keep the node from answering in time.
    for cache in [
        format!("http://{}:{refused_port}", node.host_ip()),
        format!("http://{}:{silent_port}", node.host_ip()),
    ] {
        node.run_ok(&format!(
            "sed -i '/^substituters/d' /etc/nix/nix.conf; echo 'substituters = {cache}' >> /etc/nix/nix.conf; \
             nix-store --delete $(nix-store -qR {root} 2>/dev/null) >/dev/null 2>&1 || true",
            root = fx.root
        ))
        .unwrap();
        let mut store = open(&cluster, node).await;
        let opts = CopyOptions {
            substitute_on_node: Substitute::Auto { ask_within },
            ..CopyOptions::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let start = Instant::now();
        let r = store
            .copy_closure(
                &mut local().await,
                std::slice::from_ref(&root),
                &opts,
                Some(tx),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        let took = start.elapsed();
        assert_eq!(r.sent_paths, fx.closure.len(), "{cache}: {r:?}");
        let said: Vec<Option<String>> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|e| match e {
                CopyEvent::Substituted { skipped, .. } => Some(skipped),
                _ => None,
            })
            .collect();
        assert_eq!(said.len(), 1, "{cache}: {said:?}");
        let reason = said[0].as_deref().unwrap_or_default();
        assert!(reason.contains("did not answer within 3 s"), "{reason}");
        assert!(
            took < ask_within + Duration::from_secs(20),
            "{cache}: {took:?}"
        );
        drop(store);
        verify(node);
        assert_eq!(node_closure(node, &fx.root), fx.closure);
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_roots_protect_the_copy_from_gc_until_the_store_is_dropped() {
    let fx = fixture_closure(25, "ssh-gc", 4);
    let root = StorePath::parse(&fx.root).unwrap();
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];
    node.start_nix_daemon().unwrap();
    let mut store = open(&cluster, node).await;
    store
        .copy_closure(
            &mut local().await,
            std::slice::from_ref(&root),
            &CopyOptions::default(),
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    node.run_ok("nix-collect-garbage >/dev/null 2>&1").unwrap();
    assert_eq!(
        node_closure(node, &fx.root),
        fx.closure,
        "GC kept the closure"
    );
    drop(store);
    // The session closes asynchronously; give the node's daemons a moment.
    let mut gone = false;
    for _ in 0..50 {
        node.run_ok("nix-collect-garbage >/dev/null 2>&1").unwrap();
        if node
            .run(&format!("test -e {}", fx.root))
            .unwrap()
            .status
            .code()
            == Some(1)
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "without our temp roots the unrooted copy is garbage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_one_closure_to_a_nix_2_8_node_both_succeed() {
    // Nix 2.4–2.17 daemons fail AddMultipleToStore on a path that became
    // valid meanwhile (Nix bug #6253); the engine re-queries and retries.
    let fx = fixture_closure(200, "ssh-race", 8);
    let root = StorePath::parse(&fx.root).unwrap();
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::LocalNix)).unwrap();
    let node = &cluster.nodes()[0];
    let (mut a, mut b) = (open(&cluster, node).await, open(&cluster, node).await);
    let (mut la, mut lb) = (local().await, local().await);
    let opts = CopyOptions {
        jobs: Some(3),
        ..CopyOptions::default()
    };
    let cancel = CancellationToken::new();
    let roots = std::slice::from_ref(&root);
    let (ra, rb) = tokio::join!(
        a.copy_closure(&mut la, roots, &opts, None, &cancel),
        b.copy_closure(&mut lb, roots, &opts, None, &cancel)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.closure_paths, fx.closure.len());
    assert_eq!(rb.closure_paths, fx.closure.len());
    verify(node);
    assert_eq!(node_closure(node, &fx.root), fx.closure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_without_a_receiver_compresses_with_zlib_on_both_nix_versions() {
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("trixie", NodeKind::Trixie)
            .node("local", NodeKind::LocalNix),
    )
    .unwrap();
    for node in cluster.nodes() {
        // 40 paths of 1 MiB of one repeated byte, over 40 Mbit/s (5 MB/s).
        let fx = fixture_closure(40, &format!("slow-link-{}", node.name()), 1024);
        node.shape(40).unwrap();
        let target = Target::parse(node.name()).unwrap();
        let options = cluster.ssh_options();
        let session = SshSession::connect(&target, &options).await.unwrap();
        let connector = SshConnector::new(Arc::new(session), DEFAULT_DAEMON_COMMAND)
            .with_zlib_fallback(target, options);
        let mut store = NodeStore::open(connector).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let report = store
            .copy_closure(
                &mut local().await,
                &[StorePath::parse(&fx.root).unwrap()],
                &CopyOptions::default(),
                Some(tx),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        drop(store);
        let (mut rate, mut method) = (None, None);
        while let Ok(e) = rx.try_recv() {
            match e {
                CopyEvent::Link {
                    bytes_per_second, ..
                } => rate = Some(bytes_per_second),
                CopyEvent::Compression { method: m, .. } => method = Some(m),
                _ => {}
            }
        }
        let rate = rate.expect("the link was measured");
        assert!(
            (3_000_000..7_000_000).contains(&rate),
            "{}: measured {rate} B/s over 40 Mbit/s",
            node.name()
        );
        assert_eq!(method, Some(CompressionMethod::Zlib), "{}", node.name());
        assert_eq!(report.sent_paths, fx.closure.len());
        node.unshape().unwrap();
        verify(node);
        assert_eq!(node_closure(node, &fx.root), fx.closure);
    }
}
