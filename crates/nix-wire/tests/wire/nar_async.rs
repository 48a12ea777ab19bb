//! The tokio adapter: same bytes as the synchronous encoder, errors through
//! the reader and the stats receiver, and stopping when the reader is dropped.

use crate::nar_support;

use std::fs;

use nix_wire::nar::{self, encode_async};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The reader can be moved into tasks and boxed as a plain byte stream.
#[test]
fn reader_is_send_unpin_static() {
    fn assert_traits<T: AsyncRead + Unpin + Send + 'static>() {}
    assert_traits::<nar::AsyncNarReader>();
}

#[tokio::test]
async fn async_reader_yields_the_same_nar() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("corpus");
    nar_support::build_corpus(&root);
    let mut expected = Vec::new();
    let stats = nar::dump(&root, &mut expected).unwrap();
    let (mut reader, stats_rx) = encode_async(root.clone(), 10_000);
    let mut got = Vec::new();
    reader.read_to_end(&mut got).await.unwrap();
    assert!(got == expected);
    assert_eq!(stats_rx.await.unwrap().unwrap(), stats);
}

#[tokio::test]
async fn errors_reach_reader_and_receiver() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    fs::create_dir(&dir).unwrap();
    let _l = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
    let (mut reader, stats_rx) = encode_async(dir, 1000);
    let err = reader.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert!(err.to_string().contains("socket"), "{err}");
    assert!(stats_rx.await.unwrap().is_err());
}

#[tokio::test]
async fn dropping_the_reader_stops_the_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("f");
    fs::write(&p, vec![1u8; 1 << 20]).unwrap();
    let (mut reader, stats_rx) = encode_async(p, 1024);
    let mut buf = [0u8; 10];
    reader.read_exact(&mut buf).await.unwrap();
    drop(reader);
    let res = stats_rx.await.unwrap();
    assert!(res.unwrap_err().to_string().contains("dropped"));
}
