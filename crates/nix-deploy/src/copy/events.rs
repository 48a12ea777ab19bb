//! What the copy engine tells its caller while it works, and the reader
//! that counts, reports and verifies each NAR on its way to the node.

use std::pin::Pin;
use std::task::{Context, Poll};

use nix_wire::{Sha256Hash, StorePath};
use sha2::{Digest, Sha256};
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
        /// How many.
        paths: usize,
    },
    /// A line the node's daemon logged.
    DaemonLog {
        /// The text.
        text: String,
    },
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

/// Wraps a NAR source: reports bytes as they pass and, at the end, checks
/// the NAR hashes to what the local store recorded, failing the read (so
/// the upload is aborted before its last byte) if the store was modified.
pub(crate) struct VerifyingReader<R> {
    inner: R,
    path: StorePath,
    expected: Sha256Hash,
    hasher: Sha256,
    unreported: u64,
    events: Events,
}

impl<R> VerifyingReader<R> {
    pub(crate) fn new(inner: R, path: StorePath, expected: Sha256Hash, events: Events) -> Self {
        Self {
            inner,
            path,
            expected,
            hasher: Sha256::new(),
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

impl<R: AsyncRead + Unpin> AsyncRead for VerifyingReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    this.flush_report();
                    let got = Sha256Hash(this.hasher.clone().finalize().into());
                    if got != this.expected {
                        return Poll::Ready(Err(std::io::Error::other(format!(
                            "local store path {} does not match its recorded NAR hash \
                             (recorded {}, found {got}): it was modified; \
                             repair it with `nix-store --repair-path {}`",
                            this.path, this.expected, this.path
                        ))));
                    }
                } else {
                    this.hasher.update(new);
                    this.unreported += new.len() as u64;
                    if this.unreported >= REPORT_EVERY {
                        this.flush_report();
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
