//! [`Idle`]: a daemon connection that gives up when the daemon goes quiet
//! for too long in the middle of an operation: no byte read and none taken
//! for [`ClientConfig::idle_timeout`](super::ClientConfig::idle_timeout). A
//! live but stuck daemon (blocked on a lock, say) then fails the operation
//! with a timeout instead of hanging the deploy. Only waits inside an
//! operation count: between operations nothing is read, so nothing times
//! out.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The default for [`ClientConfig::idle_timeout`](super::ClientConfig::idle_timeout).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// A stream whose reads and writes fail with [`io::ErrorKind::TimedOut`]
/// after `limit` without progress.
pub(crate) struct Idle<S> {
    inner: S,
    limit: Option<Duration>,
    /// Made once, at the first wait; reset (not reallocated) whenever a
    /// wait begins after progress.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs for the current wait.
    armed: bool,
}

impl<S> Idle<S> {
    pub(crate) fn new(inner: S, limit: Option<Duration>) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// Called when the stream made no progress: `Pending` until the limit
    /// passes, then the timeout error.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::now() + limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.armed = false;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the daemon neither sent nor took a byte for {limit:?}"),
                )))
            }
        }
    }

    /// What the inner stream did: progress disarms the timer.
    fn progress<T>(&mut self, cx: &mut Context<'_>, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match p {
            Poll::Ready(r) => {
                self.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.progress(cx, p)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, p)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, p)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_quiet_peer_times_out_and_a_chatty_one_does_not() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut idle = Idle::new(ours, Some(Duration::from_millis(400)));
        let talker = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                theirs.write_all(b"x").await.unwrap();
            }
            theirs
        });
        // 1.25 s of reading in all, never 400 ms without a byte.
        let mut got = [0u8; 5];
        idle.read_exact(&mut got).await.unwrap();
        let _theirs = talker.await.unwrap();
        let err = idle.read(&mut [0u8; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("for 400ms"), "{err}");
    }
}
