//! The NAR encoder for Tokio users: [`encode_async`] runs a [`NarEncoder`]
//! on the blocking thread pool and hands its chunks, through a channel a few
//! chunks deep, to an [`AsyncNarReader`]. Memory stays bounded by the channel
//! depth times the chunk size.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::{NarEncoder, NarError, NarStats};

/// How many chunks may wait between the encoder and the reader.
const CHANNEL_DEPTH: usize = 4;

/// Items on the channel: a chunk, the end of the NAR (`None`), or an error.
type Item = io::Result<Option<Bytes>>;

/// Encodes `path` on Tokio's blocking pool. Returns the NAR as an
/// [`AsyncRead`] and a receiver for its size and SHA-256, which resolves once
/// the encoder has finished (after the reader has been sent the last chunk).
///
/// Encoder errors end the reader with an [`io::Error`] carrying the
/// [`NarError`]'s message and are also delivered, in full, through the
/// receiver. Dropping the reader stops the encoder at its next chunk.
///
/// # Panics
///
/// When called outside a Tokio runtime.
pub fn encode_async(
    path: PathBuf,
    chunk_size: usize,
) -> (
    AsyncNarReader,
    oneshot::Receiver<Result<NarStats, NarError>>,
) {
    let (stats_tx, stats_rx) = oneshot::channel();
    let reader = spawn(path, chunk_size, true, move |stats| {
        let stats = stats
            .and_then(|s| s.ok_or_else(|| NarError::Task("encoder ended without stats".into())));
        // Nobody may be waiting for the stats; that is fine.
        let _ = stats_tx.send(stats);
    });
    (reader, stats_rx)
}

/// [`encode_async`] without the SHA-256, for a receiver that checks it
/// anyway (a Nix daemon does): errors end the reader, and a NAR whose size
/// differs from what the store recorded is caught by the upload itself.
///
/// # Panics
///
/// When called outside a Tokio runtime.
pub fn encode_async_unhashed(path: PathBuf, chunk_size: usize) -> AsyncNarReader {
    spawn(path, chunk_size, false, drop)
}

fn spawn(
    path: PathBuf,
    chunk_size: usize,
    hash: bool,
    done: impl FnOnce(Result<Option<NarStats>, NarError>) + Send + 'static,
) -> AsyncNarReader {
    let (tx, rx) = mpsc::channel::<Item>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || done(run(&path, chunk_size, hash, &tx)));
    AsyncNarReader {
        rx,
        current: Bytes::new(),
        done: false,
    }
}

fn run(
    path: &std::path::Path,
    chunk_size: usize,
    hash: bool,
    tx: &mpsc::Sender<Item>,
) -> Result<Option<NarStats>, NarError> {
    let gone = || NarError::Task("the NAR reader was dropped".into());
    let mut enc = match NarEncoder::with_chunk_size(path, chunk_size) {
        Ok(enc) if hash => enc,
        Ok(enc) => enc.without_hash(),
        Err(e) => {
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            return Err(e);
        }
    };
    for chunk in &mut enc {
        match chunk {
            Ok(chunk) => tx.blocking_send(Ok(Some(chunk))).map_err(|_| gone())?,
            Err(e) => {
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                return Err(e);
            }
        }
    }
    tx.blocking_send(Ok(None)).map_err(|_| gone())?;
    Ok(enc.stats())
}

/// The byte stream of a NAR being encoded by [`encode_async`].
#[derive(Debug)]
pub struct AsyncNarReader {
    rx: mpsc::Receiver<Item>,
    current: Bytes,
    done: bool,
}

impl AsyncRead for AsyncNarReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                buf.put_slice(&self.current[..n]);
                self.current.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(Some(chunk))) => self.current = chunk,
                Some(Ok(None)) => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Err(e));
                }
                None => {
                    self.done = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "NAR encoder stopped before the end of the NAR",
                    )));
                }
            }
        }
    }
}
