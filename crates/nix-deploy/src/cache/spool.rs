//! One path's NAR, compressed into a temporary file before it is put in a
//! cache: the file's hash names it (`nar/<file hash>.nar.zst`, as Nix names
//! them) and its length is known before the upload, which S3 requires; a
//! failed upload is retried from it. Memory stays flat (the NAR streams
//! from the filesystem through zstd to disk); the disk holds one
//! compressed NAR per upload under way.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix_wire::nar::{self, NarError, NarStats};
use nix_wire::Sha256Hash;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

/// How NARs are compressed in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NarCompression {
    /// zstd (Nix 2.4 and later read it).
    #[default]
    Zstd,
    /// Not compressed (every Nix reads it).
    None,
}

impl NarCompression {
    /// Nix's name for it in a narinfo.
    pub fn nix_name(self) -> &'static str {
        match self {
            NarCompression::Zstd => "zstd",
            NarCompression::None => "none",
        }
    }

    /// The file name extension after `.nar`.
    pub fn extension(self) -> &'static str {
        match self {
            NarCompression::Zstd => ".zst",
            NarCompression::None => "",
        }
    }
}

/// The zstd level of the next NAR: it starts fast and follows the link.
/// While uploading a NAR takes longer than compressing it (the link is the
/// bottleneck), CPU is spent to send less; while compressing takes longer,
/// the level goes down. Only NARs of at least [`Level::JUDGED_FROM`] bytes
/// count: small files' times are round trips, not rates. It stops at 9:
/// on the real closure at 20 Mbit/s, levels 10 to 12 cost 2.6 times the
/// CPU for no fewer bytes on the wire (benches/README.md).
#[derive(Debug)]
pub(crate) struct Level(AtomicI32);

impl Level {
    const START: i32 = 3;
    const MIN: i32 = 1;
    const MAX: i32 = 9;
    const JUDGED_FROM: u64 = 1 << 20;

    pub(crate) fn new() -> Self {
        Self(AtomicI32::new(Self::START))
    }

    pub(crate) fn get(&self) -> i32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adjusts the level after a NAR of `nar_size` bytes took `compress`
    /// to compress and `upload` to upload.
    pub(crate) fn observe(&self, nar_size: u64, compress: Duration, upload: Duration) {
        if nar_size < Self::JUDGED_FROM {
            return;
        }
        let step = if upload > compress * 3 / 2 {
            1
        } else if compress > upload {
            -1
        } else {
            return;
        };
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some((l + step).clamp(Self::MIN, Self::MAX))
            });
    }
}

/// A compressed NAR on disk.
pub(crate) struct Spooled {
    /// The file (deleted when dropped).
    pub file: NamedTempFile,
    /// Size and hash of the NAR itself.
    pub nar: NarStats,
    /// SHA-256 of the compressed file.
    pub file_hash: Sha256Hash,
    /// Its size.
    pub file_size: u64,
}

/// Writes the NAR of `path`, compressed (zstd at `level`), to a new
/// temporary file in `$TMPDIR`, else `/var/tmp` (on disk, where `/tmp` may
/// be memory). Setting `stop` ends it early with an error.
pub(crate) fn spool(
    path: &Path,
    compression: NarCompression,
    level: i32,
    stop: Arc<AtomicBool>,
) -> Result<Spooled, NarError> {
    let dir = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let file = NamedTempFile::new_in(dir).map_err(NarError::Write)?;
    let out = Hashing {
        inner: BufWriter::new(file.reopen().map_err(NarError::Write)?),
        hasher: Sha256::new(),
        len: 0,
        stop,
    };
    let (nar, out) = match compression {
        NarCompression::Zstd => {
            let mut z = zstd::stream::write::Encoder::new(out, level).map_err(NarError::Write)?;
            let nar = nar::dump(path, &mut z)?;
            (nar, z.finish().map_err(NarError::Write)?)
        }
        NarCompression::None => {
            let mut out = out;
            (nar::dump(path, &mut out)?, out)
        }
    };
    let (file_hash, file_size) = out.finish().map_err(NarError::Write)?;
    Ok(Spooled {
        file,
        nar,
        file_hash,
        file_size,
    })
}

/// A writer that hashes and counts what goes through it, and fails once
/// `stop` is set.
struct Hashing {
    inner: BufWriter<File>,
    hasher: Sha256,
    len: u64,
    stop: Arc<AtomicBool>,
}

impl Hashing {
    fn finish(mut self) -> io::Result<(Sha256Hash, u64)> {
        self.inner.flush()?;
        Ok((Sha256Hash(self.hasher.finalize().into()), self.len))
    }
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("the push was cancelled"));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_the_compressed_nar_and_its_hash_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("p");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), b"hello hello hello hello").unwrap();
        let mut plain = Vec::new();
        let stats = nar::dump(&src, &mut plain).unwrap();
        for compression in [NarCompression::Zstd, NarCompression::None] {
            let s = spool(&src, compression, Level::START, Arc::default()).unwrap();
            assert_eq!(s.nar, stats);
            let bytes = std::fs::read(s.file.path()).unwrap();
            assert_eq!(s.file_size, bytes.len() as u64);
            assert_eq!(s.file_hash, Sha256Hash::digest(&bytes));
            let back = match compression {
                NarCompression::Zstd => zstd::stream::decode_all(&bytes[..]).unwrap(),
                NarCompression::None => bytes,
            };
            assert_eq!(back, plain);
        }
        let stopped = spool(
            &src,
            NarCompression::None,
            1,
            Arc::new(AtomicBool::new(true)),
        );
        assert!(stopped.is_err(), "a stopped spool fails");
    }

    #[test]
    fn the_level_follows_whichever_of_compressing_and_uploading_is_slower() {
        let (ms, big) = (Duration::from_millis, 4 << 20);
        let level = Level::new();
        level.observe(big, ms(10), ms(100));
        assert_eq!(
            level.get(),
            Level::START + 1,
            "a slow link: compress harder"
        );
        level.observe(100, ms(1), ms(500));
        assert_eq!(
            level.get(),
            Level::START + 1,
            "a small NAR's time is a round trip"
        );
        level.observe(big, ms(100), ms(120));
        assert_eq!(level.get(), Level::START + 1, "balanced: stay");
        level.observe(big, ms(100), ms(50));
        assert_eq!(level.get(), Level::START, "a fast link: compress less");
        for _ in 0..20 {
            level.observe(big, ms(1), ms(100));
        }
        assert_eq!(level.get(), Level::MAX);
    }
}
