//! Framed streams (reference §1.4): u64 length + unpadded payload, repeated,
//! ended by a zero length. Used for bulk uploads (AddToStoreNar ≥ 1.23,
//! AddMultipleToStore).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{read_u64, write_u64, Result, WireError};

/// Largest frame we send or accept (the daemon allocates a buffer of the
/// announced size, so keep it modest).
pub const MAX_FRAME: usize = 1 << 20;

/// Default size of the frames [`FramedSink`] sends.
pub const DEFAULT_FRAME: usize = 128 * 1024;

/// Writes a framed stream: buffers data into frames of at most
/// [`DEFAULT_FRAME`] bytes, never sends an empty frame except the terminator.
pub struct FramedSink<'a, W: AsyncWrite + Unpin + ?Sized> {
    inner: &'a mut W,
    buf: Vec<u8>,
    frame: usize,
}

impl<'a, W: AsyncWrite + Unpin + ?Sized> FramedSink<'a, W> {
    /// Starts a framed stream on `inner`.
    pub fn new(inner: &'a mut W) -> Self {
        Self::with_frame_size(inner, DEFAULT_FRAME)
    }

    /// Starts a framed stream with frames of `frame` bytes (clamped to
    /// 1 … [`MAX_FRAME`]).
    pub fn with_frame_size(inner: &'a mut W, frame: usize) -> Self {
        let frame = frame.clamp(1, MAX_FRAME);
        Self {
            inner,
            buf: Vec::with_capacity(frame),
            frame,
        }
    }

    /// Appends data to the stream, sending full frames as they fill up.
    pub async fn send(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let room = self.frame - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.frame {
                self.flush_frame().await?;
            }
        }
        Ok(())
    }

    async fn flush_frame(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        write_u64(self.inner, self.buf.len() as u64).await?;
        self.inner.write_all(&self.buf).await?;
        self.buf.clear();
        Ok(())
    }

    /// Sends the buffered data and the terminator, and flushes.
    pub async fn finish(mut self) -> Result<()> {
        self.flush_frame().await?;
        write_u64(self.inner, 0).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Ends the stream early, discarding buffered data: the receiver sees a
    /// truncated stream, reports an error and stays in sync.
    pub async fn abort(self) -> Result<()> {
        write_u64(self.inner, 0).await?;
        self.inner.flush().await?;
        Ok(())
    }
}

/// Reads a framed stream frame by frame.
pub struct FramedSource<'a, R: AsyncRead + Unpin + ?Sized> {
    inner: &'a mut R,
    done: bool,
}

impl<'a, R: AsyncRead + Unpin + ?Sized> FramedSource<'a, R> {
    /// Starts reading a framed stream from `inner`.
    pub fn new(inner: &'a mut R) -> Self {
        Self { inner, done: false }
    }

    /// The next frame's payload, or `None` after the terminator. Frames
    /// larger than [`MAX_FRAME`] are rejected before allocating.
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let len = read_u64(self.inner).await?;
        if len == 0 {
            self.done = true;
            return Ok(None);
        }
        if len > MAX_FRAME as u64 {
            return Err(WireError::TooLong {
                what: "frame",
                len,
                limit: MAX_FRAME as u64,
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .await
            .map_err(WireError::from_io)?;
        Ok(Some(buf))
    }

    /// Reads the rest of the stream into memory, failing once it exceeds `limit` bytes.
    pub async fn read_to_end(&mut self, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(frame) = self.next_frame().await? {
            out.extend_from_slice(&frame);
            if out.len() as u64 > limit {
                return Err(WireError::Malformed(format!(
                    "framed stream longer than {limit} bytes"
                )));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[tokio::test]
    async fn round_trip_with_small_frames() {
        let mut out = Vec::new();
        let mut sink = FramedSink::with_frame_size(&mut out, 3);
        sink.send(b"hello").await.unwrap();
        sink.send(b"").await.unwrap();
        sink.send(b" world").await.unwrap();
        sink.finish().await.unwrap();
        // 11 bytes in frames of 3: 4 frames + terminator.
        assert_eq!(out.len(), 4 * 8 + 11 + 8);
        let mut cur = Cursor::new(out);
        let mut src = FramedSource::new(&mut cur);
        assert_eq!(src.read_to_end(100).await.unwrap(), b"hello world");
        assert_eq!(src.next_frame().await.unwrap(), None);
    }

    #[tokio::test]
    async fn abort_sends_only_the_terminator() {
        let mut out = Vec::new();
        let mut sink = FramedSink::new(&mut out);
        sink.send(b"partial").await.unwrap();
        sink.abort().await.unwrap();
        assert_eq!(out, [0u8; 8]);
    }

    #[tokio::test]
    async fn huge_frames_are_rejected() {
        let mut cur = Cursor::new(u64::MAX.to_le_bytes());
        let mut src = FramedSource::new(&mut cur);
        assert!(matches!(
            src.next_frame().await,
            Err(WireError::TooLong { .. })
        ));
    }
}
