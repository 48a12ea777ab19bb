//! How a copy moves its bytes, decided from the measured link
//! ([`LinkEstimate`]): how many connections, over how many channels each,
//! and whether to compress.
//!
//! - **Channels**: enough to carry the link's rate (up to [`TARGET_RATE`],
//!   about what one node's daemons import) when each SSH channel is capped
//!   at one window per round trip: `ceil(rate × rtt / window)`, at most
//!   [`MAX_JOBS`] (sshd allows 10 channels per connection: ours, the node
//!   lock and these).
//! - **Uncompressed** (or zlib): a daemon connection per channel, at least
//!   4.
//! - **zstd**: 2 daemon connections (each zstd context costs memory; the
//!   link is the bottleneck anyway), each striped over enough channels
//!   that one connection alone carries the link: where dependencies leave
//!   a single connection with work (a chain, a closure's first levels, one
//!   huge path) it still gets every window. Needs the node's receiver.
//! - **Compression**: on when one channel carries less than
//!   [`COMPRESS_BELOW`] (the link's rate, or a window per round trip).
//!   Then zstd through the node's receiver, else zlib.

use crate::link::LinkEstimate;

use super::Compression;

/// Below this many bytes per second (one channel's), compressing pays: 64 MiB/s, about 540 Mbit/s. zstd's
/// fastest level compresses several hundred MiB/s per core, and a node's
/// daemons import about 100 MiB/s.
pub const COMPRESS_BELOW: u64 = 64 << 20;

/// The rate the connections are sized for: about what a node imports.
pub const TARGET_RATE: u64 = 128 << 20;

/// The most upload channels to one node.
pub const MAX_JOBS: usize = 8;

/// Connections when nothing says otherwise.
pub const DEFAULT_JOBS: usize = 4;

/// Connections when compressing.
const COMPRESSED_JOBS: usize = 2;

/// What a copy will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferPlan {
    /// Upload connections, uncompressed or with zlib.
    pub jobs: usize,
    /// Upload connections with zstd, and the channels ("stripes") each
    /// one is carried by.
    pub zstd: (usize, usize),
    /// Whether to compress.
    pub compress: bool,
    /// Bytes per second the uncompressed link carries with all the
    /// channels (0: not measured).
    pub plain_rate: u64,
    /// Bytes per second one uncompressed channel carries (0: not measured).
    pub per_channel: u64,
    /// Bytes per second a striped zstd connection's channels carry
    /// uncompressed (0: not measured).
    pub per_connection: u64,
}

/// Decides from the link (`None`: not measured, e.g. a local store, so
/// taken to be fast), the caller's choice of compression and its fixed
/// number of connections, if any.
pub fn decide(
    link: Option<&LinkEstimate>,
    compression: Compression,
    jobs: Option<usize>,
) -> TransferPlan {
    let channels = link.map_or(1, needed).clamp(1, MAX_JOBS);
    // One channel's capacity decides: dependencies often leave a single
    // connection with work (the first levels of a closure), and there a
    // window per round trip is all it carries.
    let per_channel = link.map_or(u64::MAX, |l| l.capacity(1));
    let compress = match compression {
        Compression::Never => false,
        Compression::Always => true,
        Compression::Auto => per_channel < COMPRESS_BELOW,
    };
    let base = if compress {
        COMPRESSED_JOBS
    } else {
        DEFAULT_JOBS
    };
    let plain_jobs = jobs.map_or(base.max(channels).min(MAX_JOBS), |j| j.max(1));
    let zstd_jobs = jobs.map_or(COMPRESSED_JOBS, |j| j.max(1));
    let stripes = channels
        .div_ceil(zstd_jobs)
        .clamp(1, (MAX_JOBS / zstd_jobs).max(1));
    TransferPlan {
        jobs: plain_jobs,
        zstd: (zstd_jobs, stripes),
        compress,
        plain_rate: link.map_or(0, |l| l.capacity(plain_jobs)),
        per_channel: link.map_or(0, |l| l.capacity(1)),
        per_connection: link.map_or(0, |l| l.capacity(stripes)),
    }
}

/// Channels needed so that windows per round trip carry the link's rate.
fn needed(link: &LinkEstimate) -> usize {
    match link.window {
        Some(w) if w > 0 => {
            let rate = link.bytes_per_second.min(TARGET_RATE) as f64;
            (rate * link.rtt.as_secs_f64() / w as f64).ceil() as usize
        }
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    fn link(rtt_ms: u64, rate: u64, window: Option<u64>) -> LinkEstimate {
        LinkEstimate {
            rtt: Duration::from_millis(rtt_ms),
            bytes_per_second: rate,
            window,
            machine: None,
            cpus: None,
        }
    }

    #[test]
    fn a_fast_lan_copies_plain_with_the_default_connections() {
        let p = decide(Some(&link(0, 300 * MIB, None)), Compression::Auto, None);
        assert_eq!((p.jobs, p.compress), (DEFAULT_JOBS, false));
    }

    #[test]
    fn slow_links_compress_with_two_connections() {
        for rate in [12 * MIB, 2 * MIB] {
            let p = decide(Some(&link(0, rate, None)), Compression::Auto, None);
            assert_eq!(
                (p.jobs, p.zstd, p.compress, p.plain_rate),
                (2, (2, 1), true, rate)
            );
        }
    }

    #[test]
    fn long_round_trips_get_channels_for_the_bandwidth_delay_product() {
        let w = Some(2 * MIB);
        // 20 ms: a channel carries 100 MiB/s; 128 MiB/s × 0.02 s / 2 MiB
        // = 1.3 channels: the default 4, plain.
        let p = decide(Some(&link(20, 300 * MIB, w)), Compression::Auto, None);
        assert_eq!((p.jobs, p.compress), (DEFAULT_JOBS, false));
        // 80 ms: a channel carries 25 MiB/s: compress; 5.12: 6 channels,
        // 150 MiB/s uncompressed in all: 6 zlib connections, or 2 zstd
        // ones of 3 stripes, each carrying 75 MiB/s alone.
        let p = decide(Some(&link(80, 300 * MIB, w)), Compression::Auto, None);
        assert_eq!((p.jobs, p.zstd, p.compress), (6, (2, 3), true));
        assert_eq!((p.plain_rate, p.per_connection), (150 * MIB, 75 * MIB));
        // 150 ms: 9.6, capped at 8 channels: 2 × 4.
        let p = decide(Some(&link(150, 300 * MIB, w)), Compression::Auto, None);
        assert_eq!((p.jobs, p.zstd, p.compress), (MAX_JOBS, (2, 4), true));
        // 40 ms at 100 Mbit/s: the link is the limit: compress.
        let p = decide(Some(&link(40, 12 * MIB, w)), Compression::Auto, None);
        assert_eq!((p.jobs, p.zstd, p.compress), (2, (2, 1), true));
    }

    #[test]
    fn the_callers_choices_win() {
        let slow = link(0, 2 * MIB, None);
        let p = decide(Some(&slow), Compression::Never, Some(3));
        assert_eq!((p.jobs, p.compress), (3, false));
        let p = decide(None, Compression::Always, None);
        assert_eq!(
            (p.jobs, p.zstd, p.compress, p.plain_rate),
            (2, (2, 1), true, 0)
        );
        let p = decide(None, Compression::Auto, None);
        assert_eq!((p.jobs, p.compress), (DEFAULT_JOBS, false));
        // Forced connections keep the channels within sshd's limit.
        let far = link(150, 300 * MIB, Some(2 * MIB));
        let p = decide(Some(&far), Compression::Auto, Some(3));
        assert_eq!((p.jobs, p.zstd), (3, (3, 2)));
    }
}
