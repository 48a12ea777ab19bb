//! One path's NAR, compressed into a temporary file before it is put in a
//! cache: the file's hash names it (`nar/<file hash>.nar.zst`, as Nix names
//! them) and its length is known before the upload, which S3 requires; a
//! failed upload is retried from it. Memory stays flat (the NAR streams
//! from the filesystem through zstd to disk); the disk holds one
//! compressed NAR per upload under way.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

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

/// zstd's level for cache NARs: fast, and most of what higher levels give.
const ZSTD_LEVEL: i32 = 3;

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

/// Writes the NAR of `path`, compressed, to a new temporary file.
pub(crate) fn spool(path: &Path, compression: NarCompression) -> Result<Spooled, NarError> {
    let file = NamedTempFile::new().map_err(NarError::Write)?;
    let out = Hashing {
        inner: BufWriter::new(file.reopen().map_err(NarError::Write)?),
        hasher: Sha256::new(),
        len: 0,
    };
    let (nar, out) = match compression {
        NarCompression::Zstd => {
            let mut z =
                zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(NarError::Write)?;
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

/// A writer that hashes and counts what goes through it.
struct Hashing {
    inner: BufWriter<File>,
    hasher: Sha256,
    len: u64,
}

impl Hashing {
    fn finish(mut self) -> io::Result<(Sha256Hash, u64)> {
        self.inner.flush()?;
        self.inner.get_ref().sync_data()?;
        Ok((Sha256Hash(self.hasher.finalize().into()), self.len))
    }
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
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
            let s = spool(&src, compression).unwrap();
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
    }
}
