//! [`Striped`]: the sender's side of one stream carried by several
//! channels ("stripes", see `deploy_receive::stripes`), so that a single
//! daemon connection is not held to one SSH channel's window per round
//! trip. What is written is cut into chunks (a little-endian `u32` length,
//! then the bytes) dealt to the stripes in turn; a flush sends what is
//! buffered as a chunk of its own. Reads come from stripe 0, the lead.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest chunk: a quarter of an OpenSSH channel window, so every
/// stripe has a few in flight.
pub const CHUNK: usize = 512 * 1024;

/// A stream over `stripes` (the lead first), each chunk on the next one.
pub struct Striped<S> {
    stripes: Vec<S>,
    /// The stripe the next chunk goes to.
    turn: usize,
    /// Bytes waiting to become a chunk.
    pending: Vec<u8>,
    /// A chunk being written to stripe `turn`, with its header, and how
    /// far.
    out: Vec<u8>,
    pos: usize,
}

impl<S> Striped<S> {
    /// Stripes over `lead` and `others`, in that order.
    pub fn new(lead: S, others: Vec<S>) -> Self {
        let mut stripes = vec![lead];
        stripes.extend(others);
        Self {
            stripes,
            turn: 0,
            pending: Vec::with_capacity(CHUNK),
            out: Vec::new(),
            pos: 0,
        }
    }

    /// How many stripes it has.
    pub fn stripes(&self) -> usize {
        self.stripes.len()
    }

    /// The stripes, the lead first.
    pub fn parts(&self) -> &[S] {
        &self.stripes
    }
}

impl<S: AsyncWrite + Unpin> Striped<S> {
    /// Writes out the chunk in `out`, if any, then moves to the next stripe.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.out.len() {
            let stripe = &mut self.stripes[self.turn];
            let n = ready!(Pin::new(stripe).poll_write(cx, &self.out[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        if !self.out.is_empty() {
            self.out.clear();
            self.pos = 0;
            self.turn = (self.turn + 1) % self.stripes.len();
        }
        Poll::Ready(Ok(()))
    }

    /// Makes the pending bytes the next chunk.
    fn seal(&mut self) {
        debug_assert!(self.out.is_empty());
        let len = self.pending.len() as u32;
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.append(&mut self.pending);
        self.pos = 0;
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Striped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_out(cx))?;
            if this.pending.len() < CHUNK {
                break;
            }
            this.seal();
        }
        let n = buf.len().min(CHUNK - this.pending.len());
        this.pending.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_out(cx))?;
            if this.pending.is_empty() {
                break;
            }
            this.seal();
        }
        for stripe in &mut this.stripes {
            ready!(Pin::new(stripe).poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        for stripe in &mut self.get_mut().stripes {
            ready!(Pin::new(stripe).poll_shutdown(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Striped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stripes[0]).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Reads `stripes` back as the receiver does: chunk i from stripe i mod N.
    fn unstripe(stripes: &[Vec<u8>]) -> Vec<u8> {
        let mut pos = vec![0usize; stripes.len()];
        let mut out = Vec::new();
        for turn in (0..stripes.len()).cycle() {
            let s = &stripes[turn];
            if pos[turn] == s.len() {
                break;
            }
            let len = u32::from_le_bytes(s[pos[turn]..pos[turn] + 4].try_into().unwrap()) as usize;
            assert!(len > 0 && len <= CHUNK);
            out.extend_from_slice(&s[pos[turn] + 4..pos[turn] + 4 + len]);
            pos[turn] += 4 + len;
        }
        assert!(
            pos.iter().zip(stripes).all(|(p, s)| *p == s.len()),
            "every stripe read to its end"
        );
        out
    }

    #[tokio::test]
    async fn chunks_go_round_the_stripes_and_flushes_cut_them() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
        let mut s = Striped::new(Vec::new(), vec![Vec::new(), Vec::new()]);
        s.write_all(b"hello").await.unwrap();
        s.flush().await.unwrap();
        s.write_all(&data).await.unwrap();
        s.write_all(b"bye").await.unwrap();
        s.shutdown().await.unwrap();
        let parts = s.parts().to_vec();
        assert_eq!(&parts[0][..9], b"\x05\0\0\0hello", "the flush made a chunk");
        assert!(parts.iter().all(|p| !p.is_empty()));
        let mut want = b"hello".to_vec();
        want.extend_from_slice(&data);
        want.extend_from_slice(b"bye");
        assert_eq!(unstripe(&parts), want);
    }

    #[tokio::test]
    async fn a_flush_with_nothing_pending_sends_no_chunk() {
        let mut s = Striped::new(Vec::new(), vec![Vec::new()]);
        s.flush().await.unwrap();
        s.write_all(b"x").await.unwrap();
        s.flush().await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(s.parts()[0], b"\x01\0\0\0x");
        assert!(s.parts()[1].is_empty());
    }
}
