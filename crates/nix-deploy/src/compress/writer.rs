//! [`ZstdWriter`]: an `AsyncWrite` that zstd-compresses what goes through
//! it. A flush ends the current zstd block (so everything written so far
//! can be decoded at once: protocol messages never wait in a half-filled
//! block), a shutdown ends the frame. At a level change the writer ends the
//! frame and starts the next one at the new level: the receiver decodes
//! frames back to back.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zstd::stream::raw::{CParameter, Encoder, InBuffer, Operation, OutBuffer};

use super::control::ZstdControl;

/// Input compressed per step (zstd's recommended input size).
const STEP: usize = 128 * 1024;

/// From this level on a full step takes long enough (a millisecond or more)
/// to be run off the async worker, so the SSH session's task keeps moving;
/// small writes (frame headers) are compressed in place.
const BLOCKING_FROM_LEVEL: i32 = 3;

/// Compresses writes into `inner`; reads pass through untouched.
pub struct ZstdWriter<W> {
    inner: W,
    encoder: Encoder<'static>,
    level: i32,
    control: Arc<ZstdControl>,
    id: usize,
    /// Compressed bytes not yet written to `inner`: `out[pos..len]`.
    out: Vec<u8>,
    pos: usize,
    len: usize,
    /// Whether a frame is open (input went in since the last frame end).
    in_frame: bool,
}

impl<W> ZstdWriter<W> {
    /// Wraps `inner`, at the level `control` says.
    pub fn new(inner: W, control: Arc<ZstdControl>) -> io::Result<Self> {
        let level = control.level();
        let mut encoder = Encoder::new(level)?;
        encoder.set_parameter(CParameter::ChecksumFlag(false))?;
        Ok(Self {
            inner,
            encoder,
            level,
            id: control.writer_id(),
            control,
            out: vec![0; zstd::zstd_safe::CCtx::out_size()],
            pos: 0,
            len: 0,
            in_frame: false,
        })
    }

    /// The stream it writes into.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Runs one encoder operation into the (drained) output buffer.
    fn step<T>(
        &mut self,
        op: impl FnOnce(&mut Encoder<'static>, &mut OutBuffer<'_, [u8]>) -> io::Result<T>,
    ) -> io::Result<T> {
        debug_assert_eq!(self.pos, self.len);
        let mut dst = OutBuffer::around(&mut self.out[..]);
        let r = op(&mut self.encoder, &mut dst)?;
        self.len = dst.pos();
        self.pos = 0;
        self.control.count_output(self.len as u64);
        Ok(r)
    }
}

impl<W: AsyncWrite + Unpin> ZstdWriter<W> {
    /// Writes out what is buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.len {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.pos..self.len]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Ends the open frame, if any, writing out its end.
    fn poll_end_frame(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_drain(cx))?;
            if !self.in_frame {
                return Poll::Ready(Ok(()));
            }
            if self.step(|e, out| e.finish(out, true))? == 0 {
                self.in_frame = false;
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ZstdWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let wanted = this.control.level();
        if wanted != this.level {
            ready!(this.poll_end_frame(cx))?;
            this.encoder
                .set_parameter(CParameter::CompressionLevel(wanted))?;
            this.level = wanted;
        }
        let input = &buf[..buf.len().min(STEP)];
        let started = Instant::now();
        let compress = |w: &mut Self| {
            w.step(|e, out| {
                let mut src = InBuffer::around(input);
                e.run(&mut src, out)?;
                Ok(src.pos())
            })
        };
        let blocking = this.level >= BLOCKING_FROM_LEVEL && input.len() >= STEP / 2;
        let consumed = if blocking && multi_threaded() {
            tokio::task::block_in_place(|| compress(this))?
        } else {
            compress(this)?
        };
        this.in_frame = true;
        this.control
            .record(this.id, consumed as u64, started.elapsed());
        Poll::Ready(Ok(consumed))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_drain(cx))?;
            let remaining = this.step(|e, out| e.flush(out))?;
            if remaining == 0 && this.len == 0 {
                break;
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_end_frame(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for ZstdWriter<W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

fn multi_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 31) % 97) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    /// What the receiver would make of the bytes written so far.
    fn decoded(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        deploy_receive::pump(stream, &mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn a_flush_makes_everything_written_so_far_decodable() {
        let control = ZstdControl::fixed(3);
        let mut w = ZstdWriter::new(Vec::new(), control).unwrap();
        let a = sample(200_000);
        w.write_all(&a).await.unwrap();
        w.write_all(b"request").await.unwrap();
        w.flush().await.unwrap();
        // No frame end yet, and still every byte is there.
        assert_eq!(decoded(&w.inner), [&a[..], b"request"].concat());
        w.write_all(b"more").await.unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(decoded(&w.inner), [&a[..], b"request", b"more"].concat());
        assert!(w.inner.len() < a.len() / 2, "it compressed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn level_changes_start_new_frames_that_decode_back_to_back() {
        let control = ZstdControl::fixed(1);
        let mut w = ZstdWriter::new(Vec::new(), control.clone()).unwrap();
        let mut all = Vec::new();
        for level in [1, 9, 19, 2] {
            control.force_level(level);
            let part = sample(300_000 + level as usize);
            w.write_all(&part).await.unwrap();
            all.extend(part);
        }
        w.shutdown().await.unwrap();
        assert_eq!(decoded(&w.inner), all);
    }
}
