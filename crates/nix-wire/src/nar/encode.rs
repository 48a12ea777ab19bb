//! Streaming NAR encoder: walks a filesystem tree the way `nix-store --dump`
//! does and yields the archive as bounded [`Bytes`] chunks, hashing and
//! counting in the same pass. Neither a whole file nor the whole NAR is ever
//! held in memory: file contents are read straight into the chunk being
//! built, one chunk (plus at most one name or symlink target) at a time.

use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::{padding, NarError, NarStats, MAGIC};
use crate::Sha256Hash;

/// Default size of the chunks [`NarEncoder`] yields: 256 KiB.
pub const DEFAULT_CHUNK_SIZE: usize = 256 * 1024;

/// Owner-execute bit (S_IXUSR): the only permission a NAR records.
const OWNER_EXEC: u32 = 0o100;

/// A NAR of a filesystem path, as an iterator of chunks.
///
/// Directory entries are emitted in raw byte order of their names, symlink
/// targets verbatim, and files are executable iff their owner-execute bit is
/// set. Chunks are about `chunk_size` bytes (a chunk may exceed it by one
/// entry name or symlink target); the last one may be shorter. After an error
/// the iterator ends. Once the last chunk has been returned, [`Self::stats`]
/// gives the NAR's size and SHA-256.
pub struct NarEncoder {
    chunk_size: usize,
    buf: BytesMut,
    /// Open directories, innermost last.
    stack: Vec<DirFrame>,
    /// The regular file whose contents are being copied.
    file: Option<OpenFile>,
    /// `None` when the caller does not need the SHA-256.
    hasher: Option<Sha256>,
    size: u64,
    /// Set once the last chunk is out (the hash is zero if not computed).
    stats: Option<NarStats>,
    failed: bool,
}

struct DirFrame {
    path: PathBuf,
    /// Remaining entry names, already sorted.
    names: std::vec::IntoIter<OsString>,
}

struct OpenFile {
    path: PathBuf,
    file: File,
    len: u64,
    remaining: u64,
}

impl NarEncoder {
    /// Starts encoding `path` with [`DEFAULT_CHUNK_SIZE`] chunks. Fails at
    /// once if `path` cannot be inspected or is not archivable.
    pub fn new(path: &Path) -> Result<Self, NarError> {
        Self::with_chunk_size(path, DEFAULT_CHUNK_SIZE)
    }

    /// Starts encoding `path`, yielding chunks of about `chunk_size` bytes
    /// (at least 1).
    pub fn with_chunk_size(path: &Path, chunk_size: usize) -> Result<Self, NarError> {
        let chunk_size = chunk_size.max(1);
        let mut enc = NarEncoder {
            chunk_size,
            buf: BytesMut::with_capacity(chunk_size),
            stack: Vec::new(),
            file: None,
            hasher: Some(Sha256::new()),
            size: 0,
            stats: None,
            failed: false,
        };
        put_str(&mut enc.buf, MAGIC);
        enc.start_node(path.to_path_buf())?;
        Ok(enc)
    }

    /// Skips the SHA-256 (for a receiver that checks it anyway, as a Nix
    /// daemon does): [`Self::stats`] is then always `None`, [`Self::size`]
    /// still says the size.
    pub fn without_hash(mut self) -> Self {
        self.hasher = None;
        self
    }

    /// Size and SHA-256 of the NAR, once the last chunk has been returned;
    /// `None` before that, after an error, or [without hashing](Self::without_hash).
    pub fn stats(&self) -> Option<NarStats> {
        self.stats.filter(|_| self.hasher.is_some())
    }

    /// The NAR's size, once the last chunk has been returned.
    pub fn size(&self) -> Option<u64> {
        self.stats.map(|s| s.size)
    }

    fn is_done(&self) -> bool {
        self.stack.is_empty() && self.file.is_none()
    }

    /// Writes the node for `path` (whose entry header, if any, is already
    /// written) and opens whatever it needs to continue.
    fn start_node(&mut self, path: PathBuf) -> Result<(), NarError> {
        let meta = fs::symlink_metadata(&path).map_err(NarError::fs(&path))?;
        let ft = meta.file_type();
        put_str(&mut self.buf, b"(");
        put_str(&mut self.buf, b"type");
        if ft.is_file() {
            self.start_file(path, &meta)
        } else if ft.is_dir() {
            put_str(&mut self.buf, b"directory");
            let mut names: Vec<OsString> = fs::read_dir(&path)
                .and_then(|rd| rd.map(|e| e.map(|e| e.file_name())).collect())
                .map_err(NarError::fs(&path))?;
            names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            let names = names.into_iter();
            self.stack.push(DirFrame { path, names });
            Ok(())
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(NarError::fs(&path))?;
            put_str(&mut self.buf, b"symlink");
            put_str(&mut self.buf, b"target");
            put_str(&mut self.buf, target.as_os_str().as_bytes());
            put_str(&mut self.buf, b")");
            self.node_done();
            Ok(())
        } else {
            let kind = if ft.is_socket() {
                "socket"
            } else if ft.is_fifo() {
                "FIFO"
            } else if ft.is_block_device() {
                "block device"
            } else if ft.is_char_device() {
                "character device"
            } else {
                "file of unknown type"
            };
            Err(NarError::UnsupportedFileType { path, kind })
        }
    }

    fn start_file(&mut self, path: PathBuf, meta: &Metadata) -> Result<(), NarError> {
        put_str(&mut self.buf, b"regular");
        if meta.permissions().mode() & OWNER_EXEC != 0 {
            put_str(&mut self.buf, b"executable");
            put_str(&mut self.buf, b"");
        }
        put_str(&mut self.buf, b"contents");
        let len = meta.len();
        self.buf.put_u64_le(len);
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(NarError::fs(&path))?;
        self.file = Some(OpenFile {
            path,
            file,
            len,
            remaining: len,
        });
        Ok(())
    }

    /// Closes the entry around a finished node, if it is inside a directory.
    fn node_done(&mut self) {
        if !self.stack.is_empty() {
            put_str(&mut self.buf, b")");
        }
    }

    /// Appends to `buf` until it holds a chunk or the NAR is complete.
    fn fill(&mut self) -> Result<(), NarError> {
        // Reuses the previous chunk's allocation if the consumer dropped it.
        self.buf.reserve(self.chunk_size);
        while self.buf.len() < self.chunk_size {
            if let Some(f) = &mut self.file {
                if f.remaining > 0 {
                    let room = (self.chunk_size - self.buf.len()) as u64;
                    read_into(f, &mut self.buf, f.remaining.min(room) as usize)?;
                    continue;
                }
                let pad = padding(f.len);
                self.buf.put_bytes(0, pad);
                put_str(&mut self.buf, b")");
                self.file = None;
                self.node_done();
                continue;
            }
            let Some(frame) = self.stack.last_mut() else {
                break;
            };
            match frame.names.next() {
                Some(name) => {
                    let path = frame.path.join(&name);
                    put_str(&mut self.buf, b"entry");
                    put_str(&mut self.buf, b"(");
                    put_str(&mut self.buf, b"name");
                    put_str(&mut self.buf, name.as_bytes());
                    put_str(&mut self.buf, b"node");
                    self.start_node(path)?;
                }
                None => {
                    self.stack.pop();
                    put_str(&mut self.buf, b")");
                    self.node_done();
                }
            }
        }
        Ok(())
    }
}

impl Iterator for NarEncoder {
    type Item = Result<Bytes, NarError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.stats.is_some() {
            return None;
        }
        if let Err(e) = self.fill() {
            self.failed = true;
            return Some(Err(e));
        }
        let chunk = self.buf.split().freeze();
        if let Some(h) = self.hasher.as_mut() {
            h.update(&chunk);
        }
        self.size += chunk.len() as u64;
        if self.is_done() {
            let sha256 = self.hasher.as_mut().map(|h| h.finalize_reset().into());
            self.stats = Some(NarStats {
                size: self.size,
                sha256: Sha256Hash(sha256.unwrap_or_default()),
            });
        }
        Some(Ok(chunk))
    }
}

/// Reads exactly `want` bytes of `f` onto the end of `buf`.
fn read_into(f: &mut OpenFile, buf: &mut BytesMut, want: usize) -> Result<(), NarError> {
    let start = buf.len();
    buf.resize(start + want, 0);
    let mut filled = start;
    while filled < start + want {
        match f.file.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(NarError::FileChanged {
                    path: f.path.clone(),
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(NarError::fs(&f.path)(e)),
        }
    }
    f.remaining -= want as u64;
    Ok(())
}

/// Appends a NAR string: u64 length, bytes, zero padding to 8.
fn put_str(buf: &mut BytesMut, s: &[u8]) {
    buf.put_u64_le(s.len() as u64);
    buf.put_slice(s);
    buf.put_bytes(0, padding(s.len() as u64));
}

/// Writes the NAR of `path` to `out`, returning its size and SHA-256.
pub fn dump(path: &Path, out: &mut impl Write) -> Result<NarStats, NarError> {
    let mut enc = NarEncoder::new(path)?;
    for chunk in &mut enc {
        out.write_all(&chunk?).map_err(NarError::Write)?;
    }
    out.flush().map_err(NarError::Write)?;
    finished(&enc)
}

/// Computes the NAR size and SHA-256 of `path` (Nix's `narSize`, `narHash`)
/// without writing the NAR anywhere.
pub fn hash_path(path: &Path) -> Result<NarStats, NarError> {
    let mut enc = NarEncoder::new(path)?;
    for chunk in &mut enc {
        chunk?;
    }
    finished(&enc)
}

fn finished(enc: &NarEncoder) -> Result<NarStats, NarError> {
    enc.stats()
        .ok_or_else(|| NarError::Task("encoder ended without stats".into()))
}
