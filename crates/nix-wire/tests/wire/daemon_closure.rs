//! A 301-path fixture closure: NARs read from the local daemon (stdio and
//! socket) match their recorded hashes, and uploading the closure into an
//! empty store served by each peer, in every transfer mode, gives a store
//! that verifies and has the same closure.

use crate::common;

use std::time::Instant;

use nix_wire::daemon::{connect_socket, DaemonClient, ProtocolVersion};
use nix_wire::{Sha256Hash, StorePath};
use test_support::{peers, SocketDaemon, TempStore};

async fn check_nars<S>(c: &mut DaemonClient<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let cl = common::closure();
    for p in &cl.paths {
        let p = StorePath::parse(p).unwrap();
        let mut nar = Vec::new();
        let info = c.nar_from_path(&p, &mut nar).await.unwrap();
        assert_eq!(nar.len() as u64, info.nar_size, "{p}");
        assert_eq!(Sha256Hash::digest(&nar), info.nar_hash, "{p}");
    }
}

#[tokio::test]
async fn nar_from_path_matches_nar_hash_via_stdio() {
    let cl = common::closure();
    assert_eq!(cl.paths.len(), 301);
    let mut c = common::local_stdio(38).await;
    assert_eq!(c.version(), ProtocolVersion::new(1, 34));
    check_nars(&mut c).await;
    // The infos are the local store's.
    let root = StorePath::parse(&cl.root).unwrap();
    let info = c.query_path_info(&root).await.unwrap().unwrap();
    assert_eq!(info.references.len(), 300);
}

#[tokio::test]
async fn pipelined_path_infos_equal_one_by_one_at_old_and_new_minors() {
    let cl = common::closure();
    let mut paths: Vec<StorePath> = cl
        .paths
        .iter()
        .map(|p| StorePath::parse(p).unwrap())
        .collect();
    // An invalid path in the middle answers None and keeps the stream in sync.
    let missing = StorePath::parse("/nix/store/00000000000000000000000000000000-missing").unwrap();
    paths.insert(150, missing);
    assert!(paths.len() > 4 * nix_wire::daemon::PIPELINE_GROUP);
    for minor in [21, 38] {
        let mut c = common::local_stdio(minor).await;
        let all = c.query_path_infos(&paths).await.unwrap();
        assert_eq!(all.len(), paths.len());
        assert!(all[150].is_none());
        for (p, info) in paths.iter().zip(&all) {
            assert_eq!(
                &c.query_path_info(p).await.unwrap(),
                info,
                "{p} at 1.{minor}"
            );
        }
    }
}

#[tokio::test]
async fn nar_from_path_matches_nar_hash_via_socket() {
    let daemon = SocketDaemon::start();
    let s = connect_socket(Some(&daemon.socket())).await.unwrap();
    let mut c = DaemonClient::connect(s, common::config(37)).await.unwrap();
    check_nars(&mut c).await;
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// One AddToStoreNar per path.
    Single,
    /// AddMultipleToStore (falls back to Single below 1.32).
    Multiple,
}

async fn upload(mode: Mode, minor: u8) {
    let cl = common::closure();
    for peer in peers() {
        let store = TempStore::new();
        let t0 = Instant::now();
        let mut c = common::store_client(&store, &peer, minor).await;
        let items = cl.nars.iter().map(|(i, n)| (i.clone(), &n[..]));
        match mode {
            Mode::Single => {
                for (info, nar) in items {
                    c.add_to_store_nar(&info, nar, false, true).await.unwrap();
                }
            }
            Mode::Multiple => c.add_multiple_to_store(items, false, true).await.unwrap(),
        }
        let all: Vec<_> = cl.nars.iter().map(|(i, _)| &i.path).collect();
        assert_eq!(c.query_valid_paths(all, false).await.unwrap().len(), 301);
        let took = t0.elapsed();
        drop(c);
        store.verify(&peer);
        assert_eq!(store.closure(&peer, &cl.root), cl.paths);
        eprintln!(
            "{}: {mode:?} at 1.{minor}: 301 paths uploaded in {took:?}",
            peer.name
        );
    }
}

#[tokio::test]
async fn add_to_store_nar_pulled_1_21() {
    upload(Mode::Single, 21).await;
}

#[tokio::test]
async fn add_to_store_nar_pulled_1_22() {
    upload(Mode::Single, 22).await;
}

#[tokio::test]
async fn add_to_store_nar_framed_1_23() {
    upload(Mode::Single, 23).await;
}

#[tokio::test]
async fn add_to_store_nar_framed_latest() {
    upload(Mode::Single, 38).await;
}

#[tokio::test]
async fn add_multiple_falls_back_below_1_32() {
    upload(Mode::Multiple, 31).await;
}

#[tokio::test]
async fn add_multiple_to_store_1_32() {
    upload(Mode::Multiple, 32).await;
}

#[tokio::test]
async fn add_multiple_to_store_latest() {
    upload(Mode::Multiple, 38).await;
}

/// A NAR source that counts when it is opened and when it reaches EOF.
struct Counted<'a> {
    data: &'a [u8],
    finished: &'a std::sync::atomic::AtomicUsize,
}

impl tokio::io::AsyncRead for Counted<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.data.is_empty() {
            self.finished
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        std::pin::Pin::new(&mut self.data).poll_read(cx, buf)
    }
}

#[tokio::test]
async fn add_multiple_opens_sources_lazily() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let cl = common::closure();
    let finished = AtomicUsize::new(0);
    for peer in peers() {
        let store = TempStore::new();
        let mut c = common::store_client(&store, &peer, 38).await;
        let mut opened = 0;
        finished.store(0, Ordering::SeqCst);
        let items = cl.nars.iter().map(|(info, nar)| {
            // Every earlier source was read to its end before this one opens.
            assert!(finished.load(Ordering::SeqCst) >= opened, "{}", peer.name);
            opened += 1;
            let src = Counted {
                data: &nar[..],
                finished: &finished,
            };
            (info.clone(), src)
        });
        c.add_multiple_to_store(items, false, true).await.unwrap();
        assert!(finished.load(Ordering::SeqCst) >= cl.nars.len());
    }
}

/// The deploy pipeline without buffering whole NARs: a task streams each
/// NAR from the local daemon into a pipe whose reading end the upload's
/// iterator hands out as it advances.
#[tokio::test]
async fn stream_closure_from_local_daemon_to_each_peer() {
    let cl = common::closure();
    for peer in peers() {
        let store = TempStore::new();
        let mut dst = common::store_client(&store, &peer, 38).await;
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(usize, tokio::io::DuplexStream)>();
        let producer = tokio::spawn(async move {
            let mut src = common::local_stdio(38).await;
            while let Some((i, mut w)) = rx.recv().await {
                let info = &cl.nars[i].0;
                src.nar_from_valid_path(&info.path, info.nar_size, Some(info.nar_hash), &mut w)
                    .await
                    .unwrap();
                // Dropping the writer ends the source exactly at narSize.
            }
        });
        let items = cl.nars.iter().enumerate().map(|(i, (info, _))| {
            let (w, r) = tokio::io::duplex(64 * 1024);
            tx.send((i, w)).unwrap();
            (info.clone(), r)
        });
        let t0 = Instant::now();
        dst.add_multiple_to_store(items, false, true).await.unwrap();
        drop(tx);
        producer.await.unwrap();
        eprintln!("{}: streamed 301 paths in {:?}", peer.name, t0.elapsed());
        drop(dst);
        store.verify(&peer);
        assert_eq!(store.closure(&peer, &cl.root), cl.paths);
    }
}
