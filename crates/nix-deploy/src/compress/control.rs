//! [`ZstdControl`]: the compression level of one copy's zstd connections,
//! following the link against the compressor, as `zstd --adapt` does.
//!
//! Every half second it looks at how busy the compressors were: busy time
//! over wall time and active writers. A compressor that is busy nearly all
//! the time is the bottleneck, so the level goes down; one that mostly
//! waits for the link (or the node) has room, so the level goes up, within
//! the bounds the link's speed sets ([`ZstdControl::for_link`]). At level
//! 1, a compressor that is still the bottleneck and moves fewer bytes than
//! the plain link would carry means compressing is slower than not: the
//! control then asks the copy to go back to uncompressed connections.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The highest level used: above it each zstd context needs tens of MiB
/// (level 9: about 15 MiB, level 12: 45, level 19: 90) for a ratio only a
/// few percent better on binaries.
pub const MAX_LEVEL: i32 = 9;

/// What the compression contexts of one copy may take together: with the
/// rest of the process (about 20 MiB, and 2 MiB per connection) its peak
/// stays under 64 MiB (8 connections at level 3 measured 61 MiB).
pub const CONTEXT_BUDGET: u64 = 32 << 20;

/// About what one zstd stream context takes at `level`, KiB (measured on
/// this project's closures with zstd 1.5.7).
fn context_kib(level: i32) -> u64 {
    match level {
        ..=1 => 1_500,
        2 => 2_200,
        3 => 3_700,
        4 => 4_900,
        5 | 6 => 5_600,
        7 | 8 => 8_200,
        _ => 15_300,
    }
}

/// How often the level may change.
const PERIOD: Duration = Duration::from_millis(500);
/// Busy fractions above this mean the compressor is the bottleneck.
const BUSY: f64 = 0.85;
/// Busy fractions below this leave room for a higher level.
const IDLE: f64 = 0.5;

/// What the control decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The compressors now run at this level.
    Level(i32),
    /// Compressing is slower than the plain link: stop compressing.
    Uncompressed,
}

/// Told of every decision (to report it).
pub type OnDecision = Arc<dyn Fn(Decision) + Send + Sync>;

/// The shared level of one copy's zstd connections.
pub struct ZstdControl {
    level: AtomicI32,
    min: i32,
    max: i32,
    /// Bytes per second the uncompressed link would carry (0: unknown).
    plain_rate: u64,
    adaptive: bool,
    reverted: AtomicBool,
    writer_ids: AtomicUsize,
    /// Compressed bytes out, over the control's life.
    output: AtomicU64,
    window: Mutex<Window>,
    on_decision: Option<OnDecision>,
}

struct Window {
    start: Instant,
    input: u64,
    busy: Duration,
    /// Writers that compressed in this window, as a bit set of their ids.
    writers: u64,
}

impl ZstdControl {
    /// A control for `connections` zstd connections, each of whose channels
    /// carries `per_channel` bytes per second uncompressed (`plain_rate`
    /// all together): the slower a channel, the higher the level the
    /// control starts at and may reach (each step up costs more CPU per byte
    /// and compresses a little better), up to `MAX_LEVEL` and to what
    /// `CONTEXT_BUDGET` allows for that many contexts. `on_decision` hears
    /// of every change.
    pub fn for_link(
        per_channel: u64,
        plain_rate: u64,
        connections: usize,
        on_decision: Option<OnDecision>,
    ) -> Arc<Self> {
        const MIB: u64 = 1 << 20;
        let (start, max) = match per_channel {
            r if r >= 32 * MIB => (1, 3),
            r if r >= 8 * MIB => (3, MAX_LEVEL),
            r if r >= 2 * MIB => (6, MAX_LEVEL),
            _ => (MAX_LEVEL, MAX_LEVEL),
        };
        let affordable = (1..=max)
            .rev()
            .find(|&l| connections as u64 * context_kib(l) <= CONTEXT_BUDGET >> 10)
            .unwrap_or(1);
        Arc::new(Self::new(
            start.min(affordable),
            1,
            affordable,
            plain_rate,
            true,
            on_decision,
        ))
    }

    /// A control that keeps `level` (for tests and fixed choices).
    pub fn fixed(level: i32) -> Arc<Self> {
        Arc::new(Self::new(level, level, level, 0, false, None))
    }

    fn new(
        level: i32,
        min: i32,
        max: i32,
        plain_rate: u64,
        adaptive: bool,
        on_decision: Option<OnDecision>,
    ) -> Self {
        Self {
            level: AtomicI32::new(level),
            min,
            max,
            plain_rate,
            adaptive,
            reverted: AtomicBool::new(false),
            writer_ids: AtomicUsize::new(0),
            output: AtomicU64::new(0),
            window: Mutex::new(Window {
                start: Instant::now(),
                input: 0,
                busy: Duration::ZERO,
                writers: 0,
            }),
            on_decision,
        }
    }

    /// The level writers should use now.
    pub fn level(&self) -> i32 {
        self.level.load(Ordering::Relaxed)
    }

    /// Sets the level (tests).
    #[cfg(test)]
    pub(crate) fn force_level(&self, level: i32) {
        self.level.store(level, Ordering::Relaxed);
    }

    /// An id for a new writer (for counting active writers).
    pub(crate) fn writer_id(&self) -> usize {
        self.writer_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether compressing proved slower than the plain link.
    pub fn is_reverted(&self) -> bool {
        self.reverted.load(Ordering::Relaxed)
    }

    /// The compressed bytes all writers produced so far.
    pub fn output_bytes(&self) -> u64 {
        self.output.load(Ordering::Relaxed)
    }

    /// Counts `bytes` of compressed output.
    pub(crate) fn count_output(&self, bytes: u64) {
        self.output.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records one compression step of writer `id`: `input` bytes in,
    /// taking `busy` of wall-clock time.
    pub fn record(&self, id: usize, input: u64, busy: Duration) {
        if !self.adaptive {
            return;
        }
        let mut w = match self.window.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        w.input += input;
        w.busy += busy;
        w.writers |= 1 << (id % 64);
        let elapsed = w.start.elapsed();
        if elapsed < PERIOD {
            return;
        }
        let writers = f64::from(w.writers.count_ones().max(1));
        let busy = w.busy.as_secs_f64() / (elapsed.as_secs_f64() * writers);
        let rate = w.input as f64 / elapsed.as_secs_f64();
        *w = Window {
            start: Instant::now(),
            input: 0,
            busy: Duration::ZERO,
            writers: 0,
        };
        drop(w);
        self.decide(busy, rate);
    }

    fn decide(&self, busy: f64, input_rate: f64) {
        let level = self.level();
        let decision = if busy > BUSY && level > self.min {
            Decision::Level(level - 1)
        } else if busy > BUSY && self.plain_rate > 0 && input_rate < self.plain_rate as f64 {
            Decision::Uncompressed
        } else if busy < IDLE && level < self.max {
            Decision::Level(level + 1)
        } else {
            return;
        };
        match decision {
            Decision::Level(l) => self.level.store(l, Ordering::Relaxed),
            Decision::Uncompressed => {
                if self.reverted.swap(true, Ordering::Relaxed) {
                    return;
                }
            }
        }
        tracing::debug!(?decision, busy, input_rate, "zstd control");
        if let Some(f) = &self.on_decision {
            f(decision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(rate: u64) -> (Arc<ZstdControl>, Arc<Mutex<Vec<Decision>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let c = ZstdControl::for_link(
            rate,
            rate,
            2,
            Some(Arc::new(move |d| s.lock().unwrap().push(d))),
        );
        (c, seen)
    }

    #[test]
    fn slower_links_start_higher() {
        let levels: Vec<i32> = [100 << 20, 40 << 20, 12 << 20, 3 << 20, 1 << 20]
            .map(|r| ZstdControl::for_link(r, r, 2, None).level())
            .to_vec();
        assert_eq!(levels, [1, 1, 3, 6, MAX_LEVEL]);
    }

    #[test]
    fn a_busy_compressor_steps_down_then_gives_up_below_the_plain_rate() {
        let (c, seen) = control(12 << 20);
        // Busy all the time, moving 5 MiB/s: too slow at every level.
        for _ in 0..3 {
            c.decide(0.99, 5.0 * 1048576.0);
        }
        assert_eq!(c.level(), 1);
        assert!(c.is_reverted());
        assert_eq!(
            *seen.lock().unwrap(),
            [
                Decision::Level(2),
                Decision::Level(1),
                Decision::Uncompressed
            ]
        );
    }

    #[test]
    fn a_busy_compressor_faster_than_the_link_keeps_level_one() {
        let (c, _) = control(40 << 20);
        c.decide(0.99, 100.0 * 1048576.0);
        assert_eq!(c.level(), 1);
        assert!(!c.is_reverted());
    }

    #[test]
    fn an_idle_compressor_climbs_to_the_link_bound() {
        let (c, _) = control(12 << 20);
        for _ in 0..20 {
            c.decide(0.1, 1.0);
        }
        assert_eq!(c.level(), 9);
    }

    #[test]
    fn windows_average_over_active_writers() {
        let c = ZstdControl::for_link(12 << 20, 12 << 20, 2, None);
        // The window just opened: no decision yet.
        c.record(0, 1 << 20, PERIOD.mul_f64(0.45));
        assert_eq!(c.level(), 3);
        // Two writers, each busy 0.45 of the window: room to climb.
        c.window.lock().unwrap().start = Instant::now() - PERIOD;
        c.record(1, 1 << 20, PERIOD.mul_f64(0.45));
        assert_eq!(c.level(), 4);
        // One writer busy 0.9 of the window: the compressor is the limit.
        c.window.lock().unwrap().start = Instant::now() - PERIOD;
        c.record(0, 1 << 20, PERIOD.mul_f64(0.9));
        assert_eq!(c.level(), 3);
    }

    #[test]
    fn many_connections_get_levels_whose_contexts_fit_the_budget() {
        let (lo, hi) = (|c: &ZstdControl| c.min, |c: &ZstdControl| c.max);
        let two = ZstdControl::for_link(3 << 20, 3 << 20, 2, None);
        assert_eq!((lo(&two), hi(&two), two.level()), (1, 9, 6));
        let six = ZstdControl::for_link(24 << 20, 150 << 20, 6, None);
        assert_eq!((hi(&six), six.level()), (4, 3));
        let eight = ZstdControl::for_link(1 << 20, 100 << 20, 8, None);
        assert_eq!((hi(&eight), eight.level()), (3, 3));
        for connections in 1..=8 {
            let c = ZstdControl::for_link(1, 1, connections, None);
            assert!(connections as u64 * context_kib(c.max) <= CONTEXT_BUDGET >> 10);
        }
    }

    #[test]
    fn a_fixed_level_never_moves() {
        let c = ZstdControl::fixed(5);
        c.record(0, 1, Duration::from_secs(10));
        assert_eq!(c.level(), 5);
    }
}
