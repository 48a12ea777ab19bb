//! What the copy engine tells its caller while it works, and the reader
//! that reports each NAR's bytes on their way to the node.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::task::ready;

use nix_wire::StorePath;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc::UnboundedSender;

/// Progress of a copy, in order of occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyEvent {
    /// The closure is known and the node was asked what it has.
    Planned {
        /// Paths in the closure.
        closure_paths: usize,
        /// Paths the node already has (or substituted itself).
        present_paths: usize,
        /// Paths to upload.
        missing_paths: usize,
        /// NAR bytes to upload.
        missing_bytes: u64,
    },
    /// A path's NAR started to stream.
    PathStarted {
        /// The path.
        path: StorePath,
        /// Its NAR size.
        nar_size: u64,
    },
    /// More NAR bytes went out (sent about once per MiB and at each path's end).
    BytesSent {
        /// Bytes since the previous event.
        bytes: u64,
    },
    /// A batch of paths is valid on the node.
    PathsDone {
        /// The paths.
        paths: Vec<StorePath>,
    },
    /// The link was measured (before the first upload).
    Link {
        /// Round-trip time.
        rtt: Duration,
        /// Bytes per second it carries.
        bytes_per_second: u64,
        /// The node's SSH channel window, if it was measured.
        window: Option<u64>,
        /// Upload connections chosen for it.
        connections: usize,
    },
    /// The link could not be measured: the copy takes it to be fast.
    LinkUnmeasured {
        /// Why.
        reason: String,
    },
    /// How uploads are compressed from now on (at the start, and when the
    /// method changes).
    Compression {
        /// The method.
        method: CompressionMethod,
        /// Why.
        reason: String,
    },
    /// The zstd level changed (it follows the compressor's room against
    /// the link).
    CompressionLevel {
        /// The new level.
        level: i32,
    },
    /// The node fetched paths from its own binary caches before the
    /// upload ([`crate::copy::Substitute`]), or did not ask them and why.
    Substituted {
        /// Paths it fetched.
        paths: usize,
        /// Their NAR bytes, as its caches announced them.
        nar_bytes: u64,
        /// Why it did not, when it did not.
        skipped: Option<String>,
    },
    /// A line the node's daemon logged.
    DaemonLog {
        /// The text.
        text: String,
    },
}

/// How uploads are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionMethod {
    /// Not at all.
    None,
    /// zlib, by the SSH session.
    Zlib,
    /// zstd at this level, decompressed by the node's receiver.
    Zstd {
        /// The level.
        level: i32,
    },
}

impl std::fmt::Display for CompressionMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompressionMethod::None => f.write_str("none"),
            CompressionMethod::Zlib => f.write_str("zlib"),
            CompressionMethod::Zstd { level } => write!(f, "zstd -{level}"),
        }
    }
}

/// Where events go; a closed receiver is ignored.
#[derive(Clone, Default)]
pub(crate) struct Events(pub(crate) Option<UnboundedSender<CopyEvent>>);

impl Events {
    pub(crate) fn send(&self, event: CopyEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}

const REPORT_EVERY: u64 = 1 << 20;

/// Wraps a NAR source: reports its bytes as they pass, about once per MiB
/// and at the end. (The NAR's SHA-256 is not computed here: the node's
/// daemon checks every NAR against the hash the local store recorded, see
/// [`super::CopyError::LocalModified`].)
pub(crate) struct ProgressReader<R> {
    inner: R,
    unreported: u64,
    events: Events,
}

impl<R> ProgressReader<R> {
    pub(crate) fn new(inner: R, events: Events) -> Self {
        Self {
            inner,
            unreported: 0,
            events,
        }
    }

    fn flush_report(&mut self) {
        if self.unreported > 0 {
            self.events.send(CopyEvent::BytesSent {
                bytes: self.unreported,
            });
            self.unreported = 0;
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ProgressReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = buf.filled().len() - before;
        if new == 0 && buf.remaining() > 0 {
            this.flush_report();
            return Poll::Ready(Ok(()));
        }
        this.unreported += new as u64;
        if this.unreported >= REPORT_EVERY {
            this.flush_report();
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn progress_adds_up_to_the_nar() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, vec![7u8; 3_000_000]).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let nar = nix_wire::nar::encode_async_unhashed(file, 4096);
        let mut r = ProgressReader::new(nar, Events(Some(tx)));
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        drop(r);
        let mut reported = 0;
        while let Ok(CopyEvent::BytesSent { bytes }) = rx.try_recv() {
            reported += bytes;
        }
        assert_eq!(reported, out.len() as u64);
        assert!(out.len() > 3_000_000);
    }
}
