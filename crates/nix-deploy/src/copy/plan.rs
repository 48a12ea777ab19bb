//! How a copy moves its bytes, decided from the measured link
//! ([`LinkEstimate`]): how many connections, and whether to compress.
//!
//! - **Connections**: enough to carry the link's rate (up to
//!   [`TARGET_RATE`], about what one node's daemons import) when each SSH
//!   channel is capped at one window per round trip:
//!   `ceil(rate × rtt / window)`, at least 4 uncompressed (or 2 compressed,
//!   where the link is the bottleneck anyway and each zstd context costs
//!   memory), at most [`MAX_JOBS`] (sshd allows 10 channels per connection:
//!   ours, the node lock and these).
//! - **Compression**: on when one channel carries less than
//!   [`COMPRESS_BELOW`] (the link's rate, or a window per round trip):
//!   where dependencies leave one connection with work, as in a closure's
//!   first levels, that is all the copy gets. Then zstd through the node's
//!   receiver, else zlib.

use crate::link::LinkEstimate;

use super::Compression;

/// Below this many bytes per second (one channel's), compressing pays: 64 MiB/s, about 540 Mbit/s. zstd's
/// fastest level compresses several hundred MiB/s per core, and a node's
/// daemons import about 100 MiB/s.
pub const COMPRESS_BELOW: u64 = 64 << 20;

/// The rate the connections are sized for: about what a node imports.
pub const TARGET_RATE: u64 = 128 << 20;

/// The most upload connections to one node.
pub const MAX_JOBS: usize = 8;

/// Connections when nothing says otherwise.
pub const DEFAULT_JOBS: usize = 4;

/// Connections when compressing.
const COMPRESSED_JOBS: usize = 2;

/// What a copy will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferPlan {
    /// Upload connections.
    pub jobs: usize,
    /// Whether to compress.
    pub compress: bool,
    /// Bytes per second the uncompressed link carries with `jobs`
    /// connections (0: not measured).
    pub plain_rate: u64,
    /// Bytes per second one uncompressed channel carries (0: not measured).
    pub per_channel: u64,
}

/// Decides from the link (`None`: not measured, e.g. a local store, so
/// taken to be fast), the caller's choice of compression and its fixed
/// number of connections, if any.
pub fn decide(
    link: Option<&LinkEstimate>,
    compression: Compression,
    jobs: Option<usize>,
) -> TransferPlan {
    let sized = |base: usize| match (jobs, link) {
        (Some(j), _) => j.max(1),
        (None, Some(l)) => base.max(needed(l)).min(MAX_JOBS),
        (None, None) => base,
    };
    // One channel's capacity decides: dependencies often leave a single
    // connection with work (the first levels of a closure), and there a
    // window per round trip is all it carries.
    let per_channel = link.map_or(u64::MAX, |l| l.capacity(1));
    let compress = match compression {
        Compression::Never => false,
        Compression::Always => true,
        Compression::Auto => per_channel < COMPRESS_BELOW,
    };
    let jobs = match compress {
        true => sized(COMPRESSED_JOBS),
        false => sized(DEFAULT_JOBS),
    };
    TransferPlan {
        jobs,
        compress,
        plain_rate: link.map_or(0, |l| l.capacity(jobs)),
        per_channel: link.map_or(0, |l| l.capacity(1)),
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
            assert_eq!((p.jobs, p.compress, p.plain_rate), (2, true, rate));
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
        // 150 MiB/s uncompressed in all.
        let p = decide(Some(&link(80, 300 * MIB, w)), Compression::Auto, None);
        assert_eq!((p.jobs, p.compress, p.plain_rate), (6, true, 150 * MIB));
        // 150 ms: 9.6, capped at 8.
        let p = decide(Some(&link(150, 300 * MIB, w)), Compression::Auto, None);
        assert_eq!((p.jobs, p.compress), (MAX_JOBS, true));
        // 40 ms at 100 Mbit/s: the link is the limit: compress.
        let p = decide(Some(&link(40, 12 * MIB, w)), Compression::Auto, None);
        assert_eq!((p.jobs, p.compress), (2, true));
    }

    #[test]
    fn the_callers_choices_win() {
        let slow = link(0, 2 * MIB, None);
        let p = decide(Some(&slow), Compression::Never, Some(3));
        assert_eq!((p.jobs, p.compress), (3, false));
        let p = decide(None, Compression::Always, None);
        assert_eq!((p.jobs, p.compress, p.plain_rate), (2, true, 0));
        let p = decide(None, Compression::Auto, None);
        assert_eq!((p.jobs, p.compress), (DEFAULT_JOBS, false));
    }
}
