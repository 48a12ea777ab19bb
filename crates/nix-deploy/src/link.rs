//! What a node's link carries, measured before a copy so that the copy
//! engine can choose its compression and its number of connections from the
//! link itself, never from how fast the node's daemon happens to digest the
//! first paths.
//!
//! The probe is one exec channel running `uname -m; nproc; exec cat` on the
//! node: `cat` echoes what we send, so every byte we time has crossed the
//! link both ways and nothing else (no daemon, no disk) is measured. It
//! sends a short train of random bytes (so an SSH compression can't flatter
//! it): its small first piece gives the round-trip time, the pace of the
//! second half of its echo the bottleneck's bandwidth (the first half may
//! ride a token bucket's burst). On a fast link a longer train refines the
//! rate and, when the round trip is long, shows the node's SSH channel
//! window: the bytes the channel accepted before its first pause (the rate
//! is then taken from those bytes only, sent back to back; the rest waited
//! for the window, not for the link). The probe's bytes are few (256 KiB,
//! or up to 8 MiB when the link takes them in tens of milliseconds), so it
//! costs a few round trips, once per node.

use std::time::{Duration, Instant};

use deploy_ssh::{SshError, SshSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The node-side command of the probe.
const COMMAND: &str = "uname -m; nproc 2>/dev/null || echo 0; exec cat";
/// The first train's length.
const FIRST_TRAIN: usize = 256 * 1024;
/// From this rate on, a second, longer train refines the measure.
const REFINE_FROM: u64 = 16 << 20;
/// … and below this one, where a first train can't be told from a fast link.
const REFINE_UP_TO: u64 = 192 << 20;
/// The second train lasts about this long at the first train's rate…
const REFINE_TIME: Duration = Duration::from_millis(30);
/// … within these lengths.
const REFINE_MIN: usize = 1 << 20;
const REFINE_MAX: usize = 8 << 20;
/// The second train's length on a long round trip.
const WINDOW_TRAIN: usize = 3 << 20;
/// Below this round trip a window (OpenSSH's is 2 MiB) carries 200 MiB/s
/// or more per channel, so it can't matter, and pauses of a busy CPU would
/// pass for one.
const WINDOW_FROM_RTT: Duration = Duration::from_millis(10);
/// The whole probe gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Pieces written at a time.
const PIECE: usize = 32 * 1024;
/// A train's first piece.
const FIRST_PIECE: usize = 1024;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEstimate {
    /// Round-trip time through SSH.
    pub rtt: Duration,
    /// Bytes per second the link carries (the slower direction's).
    pub bytes_per_second: u64,
    /// The node's SSH channel window, when it was measured (a fast link
    /// with a long round trip): one channel carries at most this much per
    /// round trip.
    pub window: Option<u64>,
    /// The node's machine, as `uname -m` prints it.
    pub machine: Option<String>,
    /// The node's CPUs (`nproc`).
    pub cpus: Option<usize>,
}

impl LinkEstimate {
    /// The bytes per second `channels` channels can carry: the link's rate,
    /// or less when the window caps each channel at a window per round trip.
    pub fn capacity(&self, channels: usize) -> u64 {
        match self.window {
            Some(w) if !self.rtt.is_zero() => {
                let per_channel = w as f64 / self.rtt.as_secs_f64();
                self.bytes_per_second
                    .min((per_channel * channels as f64) as u64)
            }
            _ => self.bytes_per_second,
        }
    }
}

/// Why the link could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe's channel could not be opened.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The channel failed.
    #[error("the probe channel failed: {0}")]
    Io(#[from] std::io::Error),
    /// The node did not echo (e.g. a forced command in authorized_keys).
    #[error("the node did not echo the probe: {0}")]
    NoEcho(String),
    /// The connector has no link to measure (a local command).
    #[error("nothing to measure (a local connection)")]
    NotALink,
    /// It took too long.
    #[error("the probe got no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
}

/// Measures the link of `session` (see the module documentation).
pub async fn probe(session: &SshSession) -> Result<LinkEstimate, ProbeError> {
    tokio::time::timeout(TIMEOUT, run(session))
        .await
        .map_err(|_| ProbeError::Timeout)?
}

async fn run(session: &SshSession) -> Result<LinkEstimate, ProbeError> {
    let process = session.exec(COMMAND).await?;
    let (mut rd, mut wr) = tokio::io::split(process);
    let (machine, cpus) = header(&mut rd).await?;
    let noise = noise();
    let first = train(&mut rd, &mut wr, &noise, FIRST_TRAIN).await?;
    let mut estimate = LinkEstimate {
        rtt: first.rtt,
        bytes_per_second: first.rate,
        window: None,
        machine,
        cpus,
    };
    // A first train far above the compression threshold needs no second
    // one, unless the round trip is long enough for a window to matter.
    let clearly_fast = first.rate >= REFINE_UP_TO && first.rtt < WINDOW_FROM_RTT;
    if first.rate >= REFINE_FROM && !clearly_fast {
        let mut len = ((first.rate as f64 * REFINE_TIME.as_secs_f64()) as usize)
            .clamp(REFINE_MIN, REFINE_MAX);
        if first.rtt >= WINDOW_FROM_RTT {
            // Past a window it waits a round trip per window: just outgrow
            // one (OpenSSH's 2 MiB) to see it.
            len = len.min(WINDOW_TRAIN);
        }
        let second = train(&mut rd, &mut wr, &noise, len).await?;
        let window = (estimate.rtt >= WINDOW_FROM_RTT)
            .then(|| second.window(estimate.rtt))
            .flatten();
        // Past the window the train waits for acknowledgements: only the
        // bytes sent back to back before show the link's pace. Noise (a
        // busy CPU at either end) only ever slows a train down, so the
        // faster of the two trains is the better estimate.
        let second_rate = match window {
            Some(w) => second.rate_within(w as usize),
            None => second.rate,
        };
        estimate.bytes_per_second = first.rate.max(second_rate);
        estimate.window = window;
    }
    // EOF ends `cat`, and the channel with it: in the background, the
    // estimate is ready.
    tokio::spawn(async move {
        let _ = wr.shutdown().await;
        let _ = tokio::io::copy(&mut rd, &mut tokio::io::sink()).await;
    });
    Ok(estimate)
}

/// Reads the two header lines (`uname -m`, `nproc`).
async fn header(
    rd: &mut (impl AsyncReadExt + Unpin),
) -> Result<(Option<String>, Option<usize>), ProbeError> {
    let mut text = Vec::new();
    let mut byte = [0u8; 1];
    while text.iter().filter(|&&b| b == b'\n').count() < 2 {
        if text.len() > 256 || rd.read(&mut byte).await? == 0 {
            return Err(ProbeError::NoEcho(format!(
                "unexpected output {:?}",
                String::from_utf8_lossy(&text)
            )));
        }
        text.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines().map(str::trim);
    let machine = lines.next().filter(|m| !m.is_empty()).map(str::to_owned);
    let cpus = lines.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0);
    Ok((machine, cpus))
}

/// Two pieces of xorshift noise: incompressible.
fn noise() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..2 * PIECE / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// One train's timings.
struct Train {
    /// When its first piece came back.
    rtt: Duration,
    rate: u64,
    /// When each piece was accepted by the channel, and the bytes so far.
    accepted: Vec<(Duration, usize)>,
    /// When echoed bytes came back, and the bytes so far.
    arrivals: Vec<(Duration, usize)>,
}

impl Train {
    /// The pace at which the first `len` bytes came back.
    fn rate_within(&self, len: usize) -> u64 {
        let end = self.arrivals.partition_point(|a| a.1 < len);
        let within = &self.arrivals[..(end + 1).min(self.arrivals.len())];
        second_half_rate(within, within.last().map_or(0, |a| a.1))
    }

    /// The bytes the channel took before its first pause longer than a
    /// third of a round trip: the node's window, if the train outgrew it.
    fn window(&self, rtt: Duration) -> Option<u64> {
        self.accepted
            .windows(2)
            .find(|w| w[1].0 - w[0].0 > rtt / 3)
            .map(|w| w[0].1 as u64)
    }
}

/// Sends `len` bytes through the echo and times their return.
async fn train(
    rd: &mut (impl AsyncReadExt + Unpin),
    wr: &mut (impl AsyncWriteExt + Unpin),
    noise: &[u8],
    len: usize,
) -> Result<Train, ProbeError> {
    let start = Instant::now();
    let send = async {
        let mut accepted = Vec::with_capacity(len / PIECE + 1);
        let mut sent = 0;
        while sent < len {
            // A small first piece: its echo times the round trip alone.
            let n = match sent {
                0 => FIRST_PIECE,
                _ => PIECE,
            }
            .min(len - sent);
            // The noise is two pieces long: any piece fits from any offset.
            let off = sent % PIECE;
            wr.write_all(&noise[off..off + n]).await?;
            sent += n;
            accepted.push((start.elapsed(), sent));
        }
        wr.flush().await?;
        Ok::<_, std::io::Error>(accepted)
    };
    let receive = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut arrivals = Vec::new();
        let mut got = 0;
        while got < len {
            let n = rd.read(&mut buf[..(len - got).min(64 * 1024)]).await?;
            if n == 0 {
                return Err(ProbeError::NoEcho(format!(
                    "the echo ended after {got} of {len} bytes"
                )));
            }
            got += n;
            arrivals.push((start.elapsed(), got));
        }
        Ok(arrivals)
    };
    let (accepted, arrivals) = tokio::try_join!(async { Ok(send.await?) }, receive)?;
    Ok(Train {
        rtt: arrivals.first().map_or(Duration::ZERO, |a| a.0),
        rate: second_half_rate(&arrivals, len),
        accepted,
        arrivals,
    })
}

/// The pace of the second half of the arrivals, in bytes per second.
fn second_half_rate(arrivals: &[(Duration, usize)], len: usize) -> u64 {
    let Some(&(end, _)) = arrivals.last() else {
        return 0;
    };
    // From the last arrival before the half (or the first arrival, if the
    // half came in one read) to the end.
    let (t, got) = arrivals
        .iter()
        .copied()
        .take_while(|&(_, got)| got < len / 2)
        .last()
        .unwrap_or(arrivals[0]);
    // Reads come in pieces of tens of KiB: below a millisecond the clock
    // says little, and the estimate stays a lower bound.
    let secs = (end - t).as_secs_f64().max(1e-3);
    ((len - got) as f64 / secs) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_rate_skips_a_burst_at_the_start() {
        // 100 KiB at once (a token bucket's burst), then 100 KiB per 10 ms.
        let k = 1024;
        let arrivals = [
            (ms(50), 100 * k),
            (ms(60), 200 * k),
            (ms(70), 300 * k),
            (ms(80), 400 * k),
        ];
        assert_eq!(second_half_rate(&arrivals, 400 * k), 10_240_000);
    }

    #[test]
    fn a_window_is_the_bytes_before_the_first_long_pause() {
        let t = Train {
            rtt: ms(80),
            rate: 0,
            accepted: vec![(ms(0), 1), (ms(1), 2), (ms(2), 3), (ms(83), 4), (ms(84), 5)],
            // The first window's bytes come back paced by the link, the
            // rest a round trip later.
            arrivals: vec![
                (ms(80), 1),
                (ms(81), 2),
                (ms(82), 3),
                (ms(163), 4),
                (ms(164), 5),
            ],
        };
        assert_eq!(t.window(ms(80)), Some(3));
        assert_eq!(t.window(ms(300)), None);
        assert_eq!(t.rate_within(3), 1000);
    }

    #[test]
    fn capacity_is_capped_by_the_window_per_round_trip() {
        let link = LinkEstimate {
            rtt: ms(100),
            bytes_per_second: 100 << 20,
            window: Some(2 << 20),
            machine: None,
            cpus: None,
        };
        assert_eq!(link.capacity(1), 20 << 20);
        assert_eq!(link.capacity(8), 100 << 20);
        let unknown = LinkEstimate {
            window: None,
            ..link
        };
        assert_eq!(unknown.capacity(1), 100 << 20);
    }

    #[test]
    fn noise_does_not_compress() {
        let n = noise();
        let z = zstd::encode_all(&n[..], 19).unwrap();
        assert!(z.len() > n.len() * 99 / 100);
    }
}
