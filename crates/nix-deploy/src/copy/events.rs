//! What the copy engine tells its caller while it works, and the reader
//! that counts, reports and verifies each NAR on its way to the node.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;
use std::task::ready;

use nix_wire::nar::{NarError, NarStats};
use nix_wire::{Sha256Hash, StorePath};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

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
        /// How many.
        paths: usize,
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

/// The encoder's verdict on a NAR: its size and SHA-256, once it is done.
pub(crate) type NarStatsReceiver = oneshot::Receiver<Result<NarStats, NarError>>;

/// Wraps a NAR source from [`nix_wire::nar::encode_async`]: reports bytes
/// as they pass and, at the end, checks the SHA-256 the encoder computed
/// (no second pass over the bytes) to what the local store recorded,
/// failing the read (so the upload is aborted before its last frame) if
/// the store was modified.
pub(crate) struct VerifyingReader<R> {
    inner: R,
    stats: Option<NarStatsReceiver>,
    path: StorePath,
    expected: Sha256Hash,
    unreported: u64,
    events: Events,
}

impl<R> VerifyingReader<R> {
    pub(crate) fn new(
        inner: R,
        stats: NarStatsReceiver,
        path: StorePath,
        expected: Sha256Hash,
        events: Events,
    ) -> Self {
        Self {
            inner,
            stats: Some(stats),
            path,
            expected,
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

    /// At the end of the NAR: waits for the encoder's stats and compares.
    fn poll_verdict(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(rx) = self.stats.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let stats = ready!(Pin::new(rx).poll(cx));
        self.stats = None;
        let got = match stats {
            Ok(Ok(stats)) => stats.sha256,
            Ok(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e.to_string()))),
            Err(_) => {
                return Poll::Ready(Err(std::io::Error::other(
                    "the NAR encoder ended without its hash",
                )))
            }
        };
        if got != self.expected {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "local store path {} does not match its recorded NAR hash \
                 (recorded {}, found {got}): it was modified; \
                 repair it with `nix-store --repair-path {}`",
                self.path, self.expected, self.path
            ))));
        }
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VerifyingReader<R> {
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
            return this.poll_verdict(cx);
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

    async fn read_with(expected: Option<Sha256Hash>) -> std::io::Result<Vec<u8>> {
        let dir = std::env::temp_dir().join(format!("nd-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join(format!("f{}", expected.is_some()));
        std::fs::write(&file, vec![7u8; 300_000])?;
        let truth = nix_wire::nar::hash_path(&file)
            .map_err(std::io::Error::other)?
            .sha256;
        let (nar, stats) = nix_wire::nar::encode_async(file.clone(), 4096);
        let path = StorePath::parse("/nix/store/00000000000000000000000000000000-x")
            .map_err(std::io::Error::other)?;
        let mut r = VerifyingReader::new(nar, stats, path, expected.unwrap_or(truth), Events(None));
        let mut out = Vec::new();
        let res = r.read_to_end(&mut out).await.map(|_| out);
        let _ = std::fs::remove_file(&file);
        res
    }

    #[tokio::test]
    async fn passes_a_nar_that_matches() {
        let nar = read_with(None).await.unwrap();
        assert!(nar.len() > 300_000);
    }

    #[tokio::test]
    async fn fails_at_the_end_of_a_nar_that_does_not_match() {
        let err = read_with(Some(Sha256Hash([0; 32]))).await.unwrap_err();
        assert!(err.to_string().contains("was modified"), "{err}");
    }
}
