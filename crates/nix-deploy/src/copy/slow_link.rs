//! Slow links: the engine watches how fast the first batches reach the
//! node; below [`CopyOptions::compress_below`](super::CopyOptions) it asks
//! the connector for a compressed variant of itself (for SSH, a second
//! session with zlib) and the workers move their next batches onto it. A
//! fast link, where the copy is bound by CPU and compressing would cost
//! more than it saves, never switches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::events::{CopyEvent, Events};
use crate::remote::Connector;

/// Evidence needed before judging the link: this long and this much.
const MIN_TIME: Duration = Duration::from_millis(300);
const MIN_BYTES: u64 = 4 << 20;
/// Too little left to be worth a second connection.
const MIN_REMAINING: u64 = 16 << 20;
/// Largest batch while the link is being measured, so that the first
/// batches finish (and show the rate) early.
pub(super) const PROBE_BYTES: u64 = 4 << 20;

/// One upload's view of its link.
pub(super) struct SlowLink<C> {
    threshold: Option<u64>,
    total: u64,
    started: Instant,
    done: AtomicU64,
    decided: OnceCell<Option<Arc<C>>>,
}

impl<C: Connector> SlowLink<C> {
    /// For an upload of `total` bytes that switches below `threshold`
    /// bytes per second (`None`: never).
    pub(super) fn new(threshold: Option<u64>, total: u64) -> Self {
        SlowLink {
            threshold,
            total,
            started: Instant::now(),
            done: AtomicU64::new(0),
            decided: OnceCell::new(),
        }
    }

    /// Whether the link is still being measured.
    pub(super) fn probing(&self) -> bool {
        self.threshold.is_some() && self.decided.get().is_none()
    }

    /// Counts a batch of `bytes` that reached the node.
    pub(super) fn batch_done(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The compressed connector to use from now on, once the link proved
    /// slow and `connector` offered one; decided once per upload.
    pub(super) async fn compressed(&self, connector: &C, events: &Events) -> Option<Arc<C>> {
        if let Some(decided) = self.decided.get() {
            return decided.clone();
        }
        let threshold = self.threshold?;
        let (elapsed, done) = (self.started.elapsed(), self.done.load(Ordering::Relaxed));
        if elapsed < MIN_TIME || done < MIN_BYTES {
            return None;
        }
        let rate = (done as f64 / elapsed.as_secs_f64()) as u64;
        let slow = rate < threshold && self.total.saturating_sub(done) >= MIN_REMAINING;
        self.decided
            .get_or_init(|| async {
                if !slow {
                    return None;
                }
                let compressed = connector.compressed().await.map(Arc::new);
                if compressed.is_some() {
                    events.send(CopyEvent::Compressing {
                        bytes_per_second: rate,
                    });
                }
                compressed
            })
            .await
            .clone()
    }
}
