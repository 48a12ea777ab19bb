//! The node side of a compressed copy. The deployer pushes the
//! `nix-deploy-receive` program into the node's store (it is a store path
//! like any other, so only the first deploy pays for it) and runs
//!
//! ```text
//! nix-deploy-receive zstd [--stripes N --rendezvous NAME] -- /bin/sh -c 'nix-daemon --stdio'
//! nix-deploy-receive join NAME K      (on each other stripe's channel)
//! ```
//!
//! over SSH. The receiver starts the daemon command with its stdin on a pipe
//! and its stdout and stderr on the receiver's own (the SSH channel, so the
//! daemon's answers go back untouched), and decompresses what arrives, one
//! or more zstd frames cut into chunks over one or more stripes (see
//! [`stripes`]), into the daemon as each block completes.
//! The sender ends a block at every protocol message boundary, so the
//! daemon's request/response protocol never waits on a half-filled buffer.
//! The receiver never writes to the store itself: everything goes through
//! the daemon, which checks what it receives as it always does.
//!
//! This crate owns the receiver's command line, its version line and its
//! decompression loop. It must stay small (std and libzstd only: no tokio,
//! no SSH, no Nix code), since it runs on every node.

use std::io::{self, Read, Write};

use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

pub mod stripes;

/// The program's name.
pub const NAME: &str = "nix-deploy-receive";

/// The program's path inside its store path.
pub const PROGRAM: &str = "bin/nix-deploy-receive";

/// The version of the command line and the stream format. A sender uses a
/// receiver only if its `--version` line is exactly [`version_line`].
/// 2: the stream is cut into chunks, over one or more stripes.
pub const PROTOCOL: u32 = 2;

/// The largest zstd window the receiver accepts, as a power of two: it
/// bounds the receiver's memory (32 MiB). Senders stay below it.
pub const WINDOW_LOG_MAX: u32 = 25;

/// What `nix-deploy-receive --version` prints (one line).
pub fn version_line() -> String {
    format!("{NAME} {PROTOCOL} zstd stripes")
}

/// How a [`pump`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pumped {
    /// Decompressed bytes written to the output.
    pub bytes: u64,
    /// Whether the input ended between frames (false: inside one, as when
    /// the sender went away mid-copy).
    pub clean_end: bool,
}

/// Decompresses `input` (zstd frames, back to back) into `output` until the
/// input ends, writing each block's bytes as soon as it is decoded.
/// A write error (the daemon went away) ends the pump with that error.
pub fn pump(mut input: impl Read, mut output: impl Write) -> io::Result<Pumped> {
    let mut decoder = Decoder::new()?;
    decoder.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))?;
    let mut inbuf = vec![0u8; zstd::zstd_safe::DCtx::in_size()];
    let mut outbuf = vec![0u8; zstd::zstd_safe::DCtx::out_size()];
    let mut bytes = 0u64;
    // zstd's hint: 0 right after a frame ended.
    let mut hint = 0usize;
    loop {
        let n = match input.read(&mut inbuf) {
            Ok(0) => {
                return Ok(Pumped {
                    bytes,
                    clean_end: hint == 0,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut src = InBuffer::around(&inbuf[..n]);
        loop {
            let mut dst = OutBuffer::around(&mut outbuf[..]);
            let before = src.pos();
            let r = decoder.run(&mut src, &mut dst)?;
            let produced = dst.pos();
            // A call that moved nothing says nothing of the frame (right
            // after a frame's end it hints at the next frame's header).
            if produced > 0 || src.pos() > before {
                hint = r;
            }
            if produced > 0 {
                output.write_all(&outbuf[..produced])?;
                bytes += produced as u64;
            }
            // Done with this read once it is consumed and the decoder has
            // nothing more buffered (it filled less than the whole output).
            if src.pos() == n && produced < outbuf.len() {
                break;
            }
        }
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader handing out its data in pieces of at most `step` bytes, as
    /// a pipe does.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 7919) % 251) as u8 ^ (i / 4096) as u8)
            .collect()
    }

    #[test]
    fn back_to_back_frames_of_several_levels_come_out_whole() {
        let parts = [sample(300_000), sample(5), sample(1 << 20)];
        let mut stream = Vec::new();
        for (part, level) in parts.iter().zip([1, 19, 3]) {
            stream.extend(zstd::encode_all(&part[..], level).unwrap());
        }
        for step in [1, 7, 4096, 1 << 20] {
            let mut out = Vec::new();
            let done = pump(
                Trickle {
                    data: &stream,
                    step,
                },
                &mut out,
            )
            .unwrap();
            assert_eq!(out, parts.concat(), "step {step}");
            assert!(done.clean_end, "step {step}: {done:?}");
            assert_eq!(done.bytes, out.len() as u64);
        }
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_reported() {
        let stream = zstd::encode_all(&sample(200_000)[..], 3).unwrap();
        let mut out = Vec::new();
        let done = pump(&stream[..stream.len() / 2], &mut out).unwrap();
        assert!(!done.clean_end);
    }

    #[test]
    fn garbage_is_an_error() {
        let err = pump(&b"not zstd at all"[..], Vec::new()).unwrap_err();
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn a_window_above_the_limit_is_refused() {
        let data = sample(1 << 16);
        let mut enc = zstd::stream::raw::Encoder::new(3).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(WINDOW_LOG_MAX + 2))
            .unwrap();
        let mut out = vec![0u8; 1 << 20];
        let mut src = InBuffer::around(&data);
        let mut dst = OutBuffer::around(&mut out[..]);
        enc.run(&mut src, &mut dst).unwrap();
        while enc.finish(&mut dst, true).unwrap() > 0 {}
        let n = dst.pos();
        assert!(pump(&out[..n], Vec::new()).is_err());
    }
}
