//! [`MaybeZstd`]: a connection's byte stream, plain or with zstd on the
//! way out.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ZstdWriter;

/// A daemon connection's stream: as it is, or compressed towards the node.
pub enum MaybeZstd<S> {
    /// Plain bytes.
    Plain(S),
    /// zstd on the way out, for a node-side receiver.
    Zstd(ZstdWriter<S>),
}

impl<S> MaybeZstd<S> {
    /// Whether writes are compressed.
    pub fn is_compressed(&self) -> bool {
        matches!(self, MaybeZstd::Zstd(_))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeZstd<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeZstd::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeZstd::Zstd(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeZstd<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeZstd::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeZstd::Zstd(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeZstd::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeZstd::Zstd(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeZstd::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeZstd::Zstd(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
