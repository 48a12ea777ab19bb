//! The copy engine between local stores: from this machine's store into an
//! empty chroot store served by `nix-daemon --stdio` of each real Nix peer.

use std::collections::BTreeSet;

use nix_deploy::copy::{CompressionMethod, CopyEvent, CopyOptions, NodeStore};
use nix_deploy::remote::CommandConnector;
use nix_wire::daemon::{connect_local, ClientConfig, DaemonClient, LocalTransport};
use nix_wire::StorePath;
use test_support::{fixture_closure, peers, Peer, TempStore};
use tokio_util::sync::CancellationToken;

async fn local() -> DaemonClient<LocalTransport> {
    DaemonClient::connect(connect_local().await.unwrap(), ClientConfig::default())
        .await
        .unwrap()
}

async fn node_store(peer: &Peer, store: &TempStore) -> NodeStore<CommandConnector> {
    let (peer2, root) = (peer.clone(), store.root().to_owned());
    let connector = CommandConnector::new(format!("{} store", peer.name), move || {
        let mut c = peer2.tokio_command("nix-daemon");
        c.arg("--stdio").arg("--store").arg(&root);
        c
    });
    NodeStore::open(connector).await.unwrap()
}

fn sp(p: &str) -> StorePath {
    StorePath::parse(p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_a_closure_then_nothing_then_only_the_new_half() {
    let small = fixture_closure(300, "engine", 4);
    let big = fixture_closure(600, "engine", 4);
    let shared = small.closure.intersection(&big.closure).count();
    assert_eq!(
        shared, 300,
        "the 600-path closure contains 300 of the small one"
    );
    for peer in peers() {
        let store = TempStore::new();
        let mut node = node_store(&peer, &store).await;
        let mut local = local().await;
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let opts = CopyOptions::default();

        let r = node
            .copy_closure(&mut local, &[sp(&small.root)], &opts, Some(tx), &cancel)
            .await
            .unwrap();
        assert_eq!(
            (r.closure_paths, r.present_paths, r.sent_paths),
            (301, 0, 301)
        );
        store.verify(&peer);
        assert_eq!(store.closure(&peer, &small.root), small.closure);
        // Events: one plan, every path started and done, bytes add up.
        let mut started = BTreeSet::new();
        let (mut done, mut bytes, mut planned) = (0, 0, 0);
        while let Ok(e) = rx.try_recv() {
            match e {
                CopyEvent::Planned { missing_bytes, .. } => planned = missing_bytes,
                CopyEvent::PathStarted { path, .. } => assert!(started.insert(path)),
                CopyEvent::PathsDone { paths } => {
                    // Each path done was started before.
                    assert!(paths.iter().all(|p| started.contains(p)), "{paths:?}");
                    done += paths.len();
                }
                CopyEvent::BytesSent { bytes: b } => bytes += b,
                CopyEvent::DaemonLog { .. } | CopyEvent::Substituted { .. } => {}
                CopyEvent::Compression { method, .. } => {
                    assert_eq!(method, CompressionMethod::None, "a local command is fast")
                }
                CopyEvent::Link { .. }
                | CopyEvent::LinkUnmeasured { .. }
                | CopyEvent::CompressionLevel { .. } => {
                    panic!("a local command has no link to measure: {e:?}")
                }
            }
        }
        assert_eq!((started.len(), done), (301, 301));
        assert_eq!((bytes, r.sent_bytes), (planned, planned));

        let again = node
            .copy_closure(&mut local, &[sp(&small.root)], &opts, None, &cancel)
            .await
            .unwrap();
        assert_eq!(
            (again.sent_paths, again.sent_bytes),
            (0, 0),
            "{}",
            peer.name
        );

        let more = node
            .copy_closure(&mut local, &[sp(&big.root)], &opts, None, &cancel)
            .await
            .unwrap();
        assert_eq!(
            (more.present_paths, more.sent_paths),
            (300, 301),
            "{}",
            peer.name
        );
        store.verify(&peer);
        assert_eq!(store.closure(&peer, &big.root), big.closure);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_or_many_give_the_same_store() {
    let fx = fixture_closure(120, "engine-jobs", 16);
    for peer in peers() {
        for jobs in [1, 3, 8] {
            let store = TempStore::new();
            let mut node = node_store(&peer, &store).await;
            let opts = CopyOptions {
                jobs: Some(jobs),
                ..CopyOptions::default()
            };
            let r = node
                .copy_closure(
                    &mut local().await,
                    &[sp(&fx.root)],
                    &opts,
                    None,
                    &CancellationToken::new(),
                )
                .await
                .unwrap();
            assert_eq!(r.sent_paths, fx.closure.len());
            store.verify(&peer);
            assert_eq!(
                store.closure(&peer, &fx.root),
                fx.closure,
                "{} jobs {jobs}",
                peer.name
            );
        }
    }
}

/// Six chains of 4 paths of about 256 KiB under one root; the chains'
/// first paths.
fn six_chains() -> (test_support::Fixture, Vec<StorePath>) {
    let chains: Vec<_> = (0..6)
        .map(|i| fixture_closure(4, &format!("engine-batches-{i}"), 256))
        .collect();
    let roots: Vec<&str> = chains.iter().map(|c| c.root.as_str()).collect();
    let heads = (0..6)
        .map(|i| {
            let name = format!("-fixture-engine-batches-{i}-0");
            let head = chains[i].closure.iter().find(|p| p.ends_with(&name));
            sp(head.expect("a chain's first path"))
        })
        .collect();
    (
        test_support::fixture_profile("engine-batches", &roots),
        heads,
    )
}

/// The batches (`PathsDone`) of a copy of `fx` over one connection into a
/// fresh store, which then verifies.
async fn batches(fx: &test_support::Fixture, opts: CopyOptions) -> Vec<Vec<StorePath>> {
    let peer = &peers()[0];
    let store = TempStore::new();
    let mut node = node_store(peer, &store).await;
    let opts = CopyOptions {
        jobs: Some(1),
        ..opts
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let r = node
        .copy_closure(
            &mut local().await,
            &[sp(&fx.root)],
            &opts,
            Some(tx),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.sent_paths, fx.closure.len());
    store.verify(peer);
    let mut batches = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let CopyEvent::PathsDone { paths } = e {
            batches.push(paths);
        }
    }
    assert_eq!(
        batches.iter().map(Vec::len).sum::<usize>(),
        fx.closure.len()
    );
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_bytes_bounds_what_turns_valid_at_once() {
    // By default one batch (the 8 MiB floor holds them all); with 1 MiB,
    // several batches of a few paths (a batch closes once it reaches the
    // limit, except the last: what is left is one chain).
    let (fx, _) = six_chains();
    let default = batches(&fx, CopyOptions::default()).await;
    assert_eq!(default.len(), 1, "{default:?}");
    let small = CopyOptions {
        batch_bytes: Some(1 << 20),
        ..CopyOptions::default()
    };
    let sizes: Vec<usize> = batches(&fx, small).await.iter().map(Vec::len).collect();
    assert!(
        sizes.len() >= 5 && sizes[..sizes.len() - 1].iter().all(|n| *n <= 5),
        "{sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_first_puts_a_path_in_the_first_batch() {
    // In batches of 1 MiB the first batch takes 4 of the 6 ready chain
    // heads; one left out goes first when asked.
    let (fx, heads) = six_chains();
    let small = || CopyOptions {
        batch_bytes: Some(1 << 20),
        ..CopyOptions::default()
    };
    let first = batches(&fx, small()).await.remove(0);
    let later = heads
        .iter()
        .find(|h| !first.contains(h))
        .expect("a head left out");
    let asked = CopyOptions {
        send_first: vec![later.clone()],
        ..small()
    };
    let first = batches(&fx, asked).await.remove(0);
    assert!(first.contains(later), "{later} not in {first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_missing_locally_is_a_clear_error_and_cancel_stops() {
    let peer = &peers()[0];
    let store = TempStore::new();
    let mut node = node_store(peer, &store).await;
    let missing = sp("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-not-built");
    let err = node
        .copy_closure(
            &mut local().await,
            &[missing],
            &CopyOptions::default(),
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not-built is not valid in the local store: build it first"),
        "{err}"
    );

    let fx = fixture_closure(40, "engine-cancel", 4);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = node
        .copy_closure(
            &mut local().await,
            &[sp(&fx.root)],
            &CopyOptions::default(),
            None,
            &cancel,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
}

/// Puts a file's first byte back when dropped.
struct Restore {
    file: std::path::PathBuf,
    byte: u8,
}

impl Restore {
    /// Flips the first byte of `file` (a store file: made writable for it).
    fn flip(file: std::path::PathBuf) -> Restore {
        use std::os::unix::fs::PermissionsExt;
        let mut data = std::fs::read(&file).unwrap();
        let byte = data[0];
        data[0] ^= 1;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&file, &data).unwrap();
        Restore { file, byte }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let mut data = std::fs::read(&self.file).unwrap();
        data[0] = self.byte;
        std::fs::write(&self.file, &data).unwrap();
        std::fs::set_permissions(&self.file, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locally_modified_path_is_refused_by_the_node_and_named() {
    let fx = fixture_closure(5, "engine-modified", 1);
    let victim = fx
        .closure
        .iter()
        .find(|p| p.ends_with("-fixture-engine-modified-2"))
        .unwrap()
        .clone();
    let _restore = Restore::flip(std::path::PathBuf::from(format!("{victim}/share/data")));
    for peer in peers() {
        let store = TempStore::new();
        let mut node = node_store(&peer, &store).await;
        let err = node
            .copy_closure(
                &mut local().await,
                &[sp(&fx.root)],
                &CopyOptions::default(),
                None,
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("local store path {victim} does not match"))
                && text.contains("nix-store --repair-path"),
            "{}: {text}",
            peer.name
        );
        // The node imported nothing broken.
        store.verify(&peer);
    }
}
