//! Entry points of the coverage-guided fuzz targets (`fuzz/`) and of the
//! corpus replay in the test suite: the parsers of bytes a node or a store
//! may hand us. Not part of the API. Each must return (never panic, never
//! allocate without bound) whatever the input.

use std::io::{Cursor, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::daemon::{ClientConfig, DaemonClient, ProtocolVersion};
use crate::nar::{self, Event, NarReader};
use crate::StorePath;

/// Decodes `data` as a NAR: the validating pass, then the event reader
/// with every file's contents read.
pub fn nar(data: &[u8]) {
    let _ = nar::validate(data);
    let mut reader = NarReader::new(data);
    let mut buf = [0u8; 4096];
    while let Ok(Some(event)) = reader.next() {
        if let Event::File { .. } = event {
            let mut contents = reader.contents();
            while let Ok(1..) = contents.read(&mut buf) {}
        }
    }
}

/// Replays `data` as everything a daemon says: its first byte picks the
/// protocol minor version offered (1.21 to 1.38), the rest is the daemon's
/// side of a handshake and of a few operations, whose requests go nowhere.
pub fn daemon_reply(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let minor = 21 + first % 18;
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let config = ClientConfig {
            max_version: ProtocolVersion::new(1, minor),
            idle_timeout: None,
            ..ClientConfig::default()
        };
        let stream = Canned::new(rest.to_vec());
        let Ok(mut c) = DaemonClient::connect(stream, config).await else {
            return;
        };
        let Ok(p) = StorePath::parse("/nix/store/g7lkiv5g5vdwr6vb5vpsmi573bs288bk-hello1") else {
            return;
        };
        let _ = c.is_valid_path(&p).await;
        let _ = c.query_path_info(&p).await;
        let _ = c.query_valid_paths([&p], true).await;
        let _ = c.query_missing(std::slice::from_ref(&p)).await;
        let _ = c
            .nar_from_valid_path(&p, 1 << 20, None, &mut tokio::io::sink())
            .await;
    });
}

/// A daemon whose answers are fixed bytes; what the client writes is
/// dropped. Also used by the proptest fuzzers of the test suite.
pub struct Canned(Cursor<Vec<u8>>);

impl Canned {
    /// A daemon that will say `bytes`, then nothing (end of stream).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Cursor::new(bytes))
    }
}

impl AsyncRead for Canned {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Canned {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
