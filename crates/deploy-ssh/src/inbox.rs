//! [`Inbox`]: what a remote command printed on stdout, between the task that
//! drains the SSH channel and whoever reads the command's output.
//!
//! russh hands each channel's messages over a bounded queue and waits when
//! it is full; a channel nobody reads would then stall the whole connection
//! (every other channel's data, window adjustments and keepalives), e.g. a
//! daemon connection whose answers pile up while its client is still
//! sending. So the draining task never waits: it appends to this inbox,
//! which the reader empties at its own pace. What waits unread is capped
//! ([`INBOX_CAP`]): a command (or node) that sends more than that without
//! being read is cut off, the reader sees an error after what came before.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, ReadBuf};

/// The most bytes a channel's stdout may hold unread.
pub const INBOX_CAP: usize = 32 << 20;

#[derive(Default)]
struct Shared {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already read.
    offset: usize,
    /// Bytes unread in all.
    len: usize,
    ended: bool,
    overflowed: bool,
    reader_gone: bool,
    waker: Option<Waker>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The draining task's end.
pub(crate) struct InboxWriter {
    shared: Arc<Mutex<Shared>>,
    cap: usize,
}

/// The reader's end: an `AsyncRead` of the command's stdout.
pub struct Inbox {
    shared: Arc<Mutex<Shared>>,
    cap: usize,
}

/// An inbox holding at most `cap` unread bytes.
pub(crate) fn inbox(cap: usize) -> (InboxWriter, Inbox) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    (
        InboxWriter {
            shared: shared.clone(),
            cap,
        },
        Inbox { shared, cap },
    )
}

impl InboxWriter {
    /// Appends `data` without ever waiting; past the cap the inbox is cut
    /// off (the reader gets an error after what it holds).
    pub(crate) fn push(&self, data: &[u8]) {
        let mut s = lock(&self.shared);
        if s.reader_gone || s.ended || data.is_empty() {
            return;
        }
        if s.len + data.len() > self.cap {
            s.overflowed = true;
            s.ended = true;
        } else {
            s.len += data.len();
            s.chunks.push_back(data.to_vec());
        }
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    /// Marks the end of stdout.
    pub(crate) fn end(&self) {
        let mut s = lock(&self.shared);
        s.ended = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

impl Drop for InboxWriter {
    fn drop(&mut self) {
        self.end();
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        s.reader_gone = true;
        s.chunks.clear();
        s.len = 0;
    }
}

impl AsyncRead for Inbox {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let cap = self.cap;
        let before = buf.filled().len();
        let mut s = lock(&self.shared);
        while buf.remaining() > 0 {
            let Some(front) = s.chunks.front() else { break };
            let n = buf.remaining().min(front.len() - s.offset);
            buf.put_slice(&front[s.offset..s.offset + n]);
            let (offset, front_len) = (s.offset + n, front.len());
            s.len -= n;
            if offset == front_len {
                s.chunks.pop_front();
                s.offset = 0;
            } else {
                s.offset = offset;
            }
        }
        if buf.filled().len() == before && s.chunks.is_empty() {
            if s.overflowed {
                return Poll::Ready(Err(io::Error::other(format!(
                    "the remote command sent more than {cap} bytes that were not read"
                ))));
            }
            if !s.ended {
                s.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn pushes_never_wait_and_reads_come_in_order() {
        let (w, mut r) = inbox(1 << 20);
        for i in 0..100u8 {
            w.push(&[i; 1000]);
        }
        w.end();
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 100_000);
        assert!(all
            .chunks(1000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
    }

    #[tokio::test]
    async fn a_read_into_a_partly_filled_buffer_waits_for_new_bytes() {
        let (w, mut r) = inbox(1 << 20);
        let mut storage = [0u8; 16];
        let mut buf = ReadBuf::new(&mut storage);
        buf.put_slice(b"old");
        let waker = futures_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut r).poll_read(&mut cx, &mut buf).is_pending());
        w.push(b"new");
        assert!(Pin::new(&mut r).poll_read(&mut cx, &mut buf).is_ready());
        assert_eq!(buf.filled(), b"oldnew");
    }

    fn futures_waker() -> Waker {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        Waker::from(Arc::new(Noop))
    }

    #[tokio::test]
    async fn a_reader_waits_for_data_and_sees_the_end() {
        let (w, mut r) = inbox(1 << 20);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            r.read_to_end(&mut all).await.map(|_| all)
        });
        tokio::task::yield_now().await;
        w.push(b"late");
        drop(w);
        assert_eq!(reader.await.unwrap().unwrap(), b"late");
    }

    #[tokio::test]
    async fn more_than_the_cap_unread_is_an_error_after_what_came_before() {
        let (w, mut r) = inbox(10);
        w.push(b"12345678");
        w.push(b"abc");
        w.push(b"more");
        let mut first = [0u8; 8];
        r.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"12345678");
        let err = r.read(&mut [0u8; 4]).await.unwrap_err();
        assert!(err.to_string().contains("more than 10 bytes"), "{err}");
    }
}
