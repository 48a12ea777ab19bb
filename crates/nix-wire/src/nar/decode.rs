//! Validating NAR decoder: a pull parser over [`std::io::Read`].
//!
//! [`NarReader::next`] returns one [`Event`] per node, in archive order.
//! After [`Event::File`], the file's bytes can be streamed with
//! [`NarReader::contents`] (or [`NarReader::read_contents`]); whatever is
//! not read is skipped by the next call to `next`, so contents are never
//! buffered. [`validate`] parses a whole NAR and returns its size and SHA-256.
//!
//! Everything is checked: the magic, every token, zero padding, string
//! lengths (before allocating), entry names (non-empty, not `.`/`..`, no `/`
//! or NUL, strictly increasing in byte order), symlink targets (non-empty, no
//! NUL) and nesting depth. The limits follow the hardened Nix parsers
//! (§8.1), except [`MAX_DEPTH`]: Nix ≥ 2.28.7 stops at 63 levels below the
//! root, we accept 256 so that anything Nix 2.8 may have archived still
//! parses, while recursion and memory stay bounded.
//!
//! The reader does not buffer: it consumes exactly the NAR's bytes, so a NAR
//! embedded in a protocol stream can be parsed in place. Wrap unbuffered
//! sources (sockets, files) in a [`std::io::BufReader`].

use std::io::{self, BufReader, Read};

use sha2::{Digest, Sha256};

use super::{padding, NarError, NarStats, MAGIC};
use crate::Sha256Hash;

/// Longest token string accepted (`"nix-archive-1"`, `"directory"`…).
pub const MAX_TOKEN_LEN: u64 = 64;
/// Longest entry name accepted, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: u64 = 255;
/// Longest symlink target accepted, in bytes (Linux `PATH_MAX` − 1).
pub const MAX_TARGET_LEN: u64 = 4095;
/// Most directories that may be nested, the root directory included.
pub const MAX_DEPTH: usize = 256;

/// One node of a NAR, in archive order. `name` is the entry name within the
/// parent directory, empty for the root node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A directory starts; its entries follow, then [`Event::EndDirectory`].
    Directory {
        /// Entry name, empty for the root.
        name: Vec<u8>,
    },
    /// The innermost open directory has no more entries.
    EndDirectory,
    /// A regular file; its `size` bytes can be read next.
    File {
        /// Entry name, empty for the root.
        name: Vec<u8>,
        /// Whether the file is executable.
        executable: bool,
        /// Length of the contents in bytes.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// Entry name, empty for the root.
        name: Vec<u8>,
        /// The link target, verbatim.
        target: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    /// Inside a file's contents.
    Contents {
        size: u64,
        remaining: u64,
    },
    /// Between the entries of the innermost directory.
    InDir,
    Done,
}

struct Dir {
    name: Vec<u8>,
    last: Option<Vec<u8>>,
}

/// A token string, read into a stack buffer.
struct Token {
    buf: [u8; MAX_TOKEN_LEN as usize],
    len: usize,
}

impl Token {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Pull parser for one NAR read from `R`. See the [module docs](self).
pub struct NarReader<R> {
    r: R,
    offset: u64,
    hasher: Sha256,
    state: State,
    /// Open directories, innermost last.
    dirs: Vec<Dir>,
    /// Name of the node being parsed, for error messages.
    entry: Vec<u8>,
    stats: Option<NarStats>,
    scratch: Vec<u8>,
}

impl<R: Read> NarReader<R> {
    /// A parser reading a NAR from the current position of `r`.
    pub fn new(r: R) -> Self {
        NarReader {
            r,
            offset: 0,
            hasher: Sha256::new(),
            state: State::Start,
            dirs: Vec::new(),
            entry: Vec::new(),
            stats: None,
            scratch: Vec::new(),
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Size and SHA-256 of the NAR, once `next` has returned `Ok(None)`.
    pub fn stats(&self) -> Option<NarStats> {
        self.stats
    }

    /// Gives back the underlying reader, positioned after the bytes consumed.
    pub fn into_inner(self) -> R {
        self.r
    }

    /// The next node, or `None` after the end of the NAR. Skips the rest of
    /// the current file's contents if they were not read. After an error the
    /// reader's position is unspecified: stop using it.
    // Not `Iterator::next`: the end is `Ok(None)` and errors are final.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Event>, NarError> {
        if let State::Contents { size, remaining } = self.state {
            self.skip(remaining)?;
            self.read_padding(size)?;
            self.expect(b")")?;
            self.node_done()?;
        }
        match self.state {
            State::Start => {
                self.expect(MAGIC)?;
                self.node(Vec::new()).map(Some)
            }
            State::InDir => self.dir_item().map(Some),
            State::Contents { .. } | State::Done => Ok(None),
        }
    }

    /// Reads contents of the current file into `buf`; `Ok(0)` at its end or
    /// when not positioned in a file.
    pub fn read_contents(&mut self, buf: &mut [u8]) -> Result<usize, NarError> {
        let State::Contents { size, remaining } = self.state else {
            return Ok(0);
        };
        let want = remaining.min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.read_some(&mut buf[..want])?;
        self.state = State::Contents {
            size,
            remaining: remaining - n as u64,
        };
        Ok(n)
    }

    /// The current file's remaining contents as a [`Read`]; errors carry the
    /// [`NarError`] inside an [`io::Error`].
    pub fn contents(&mut self) -> FileContents<'_, R> {
        FileContents { nar: self }
    }

    /// After `"entry"` or `")"` inside a directory.
    fn dir_item(&mut self) -> Result<Event, NarError> {
        let start = self.offset;
        let tok = self.read_token()?;
        match tok.bytes() {
            b")" => {
                let dir = self
                    .dirs
                    .pop()
                    .ok_or_else(|| self.invalid(start, "unbalanced ')'"))?;
                self.entry = dir.name;
                self.node_done()?;
                Ok(Event::EndDirectory)
            }
            b"entry" => {
                self.expect(b"(")?;
                self.expect(b"name")?;
                let start = self.offset;
                let name = self.read_str(MAX_NAME_LEN, "entry name")?;
                self.entry = name.clone();
                check_name(&name).map_err(|r| self.invalid(start, r))?;
                let sorted = match self.dirs.last().and_then(|d| d.last.as_deref()) {
                    Some(last) if last == name.as_slice() => Err("duplicate entry name"),
                    Some(last) if last > name.as_slice() => Err("names not sorted"),
                    _ => Ok(()),
                };
                sorted.map_err(|r| self.invalid(start, r))?;
                if let Some(d) = self.dirs.last_mut() {
                    d.last = Some(name.clone());
                }
                self.expect(b"node")?;
                self.node(name)
            }
            other => Err(self.unexpected(start, "'entry' or ')'", other)),
        }
    }

    /// Parses a node up to its first event.
    fn node(&mut self, name: Vec<u8>) -> Result<Event, NarError> {
        self.expect(b"(")?;
        self.expect(b"type")?;
        let start = self.offset;
        let tok = self.read_token()?;
        match tok.bytes() {
            b"regular" => {
                let start = self.offset;
                let mut tok = self.read_token()?;
                let executable = tok.bytes() == b"executable";
                if executable {
                    let start = self.offset;
                    let empty = self.read_token()?;
                    if !empty.bytes().is_empty() {
                        return Err(self.unexpected(start, "''", empty.bytes()));
                    }
                    tok = self.read_token()?;
                }
                if tok.bytes() != b"contents" {
                    return Err(self.unexpected(start, "'contents'", tok.bytes()));
                }
                let size = self.read_u64()?;
                self.state = State::Contents {
                    size,
                    remaining: size,
                };
                Ok(Event::File {
                    name,
                    executable,
                    size,
                })
            }
            b"symlink" => {
                self.expect(b"target")?;
                let start = self.offset;
                let target = self.read_str(MAX_TARGET_LEN, "symlink target")?;
                if target.is_empty() || target.contains(&0) {
                    return Err(self.invalid(start, "symlink target is empty or contains NUL"));
                }
                self.expect(b")")?;
                self.node_done()?;
                Ok(Event::Symlink { name, target })
            }
            b"directory" => {
                if self.dirs.len() >= MAX_DEPTH {
                    return Err(
                        self.invalid(start, format!("directories nested deeper than {MAX_DEPTH}"))
                    );
                }
                self.dirs.push(Dir {
                    name: name.clone(),
                    last: None,
                });
                self.entry.clear();
                self.state = State::InDir;
                Ok(Event::Directory { name })
            }
            other => Err(self.unexpected(start, "'regular', 'symlink' or 'directory'", other)),
        }
    }

    /// After a node's closing `")"`: closes its entry, or ends the NAR.
    fn node_done(&mut self) -> Result<(), NarError> {
        if self.dirs.is_empty() {
            self.state = State::Done;
            self.stats = Some(NarStats {
                size: self.offset,
                sha256: Sha256Hash(self.hasher.clone().finalize().into()),
            });
        } else {
            self.expect(b")")?;
            self.state = State::InDir;
        }
        Ok(())
    }

    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, NarError> {
        loop {
            match self.r.read(buf) {
                Ok(0) => {
                    return Err(NarError::Truncated {
                        offset: self.offset,
                    })
                }
                Ok(n) => {
                    self.hasher.update(&buf[..n]);
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NarError::Read {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
    }

    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), NarError> {
        while !buf.is_empty() {
            let n = self.read_some(buf)?;
            buf = &mut buf[n..];
        }
        Ok(())
    }

    fn skip(&mut self, mut n: u64) -> Result<(), NarError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(64 * 1024, 0);
        let res = (|| {
            while n > 0 {
                let want = n.min(scratch.len() as u64) as usize;
                n -= self.read_some(&mut scratch[..want])? as u64;
            }
            Ok(())
        })();
        self.scratch = scratch;
        res
    }

    fn read_u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_padding(&mut self, len: u64) -> Result<(), NarError> {
        let start = self.offset;
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding(len)];
        self.read_exact(pad)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(self.invalid(start, "non-zero padding"));
        }
        Ok(())
    }

    /// Reads a string's length and checks it against `limit` before
    /// allocating anything.
    fn read_len(&mut self, limit: u64, what: &str) -> Result<usize, NarError> {
        let start = self.offset;
        let len = self.read_u64()?;
        if len > limit {
            return Err(self.invalid(
                start,
                format!("{what} of {len} bytes exceeds the limit of {limit}"),
            ));
        }
        Ok(len as usize)
    }

    fn read_str(&mut self, limit: u64, what: &str) -> Result<Vec<u8>, NarError> {
        let len = self.read_len(limit, what)?;
        let mut s = vec![0u8; len];
        self.read_exact(&mut s)?;
        self.read_padding(len as u64)?;
        Ok(s)
    }

    fn read_token(&mut self) -> Result<Token, NarError> {
        let len = self.read_len(MAX_TOKEN_LEN, "token")?;
        let mut tok = Token {
            buf: [0; MAX_TOKEN_LEN as usize],
            len,
        };
        self.read_exact(&mut tok.buf[..len])?;
        self.read_padding(len as u64)?;
        Ok(tok)
    }

    fn expect(&mut self, want: &[u8]) -> Result<(), NarError> {
        let start = self.offset;
        let tok = self.read_token()?;
        if tok.bytes() != want {
            let want = format!("'{}'", String::from_utf8_lossy(want));
            return Err(self.unexpected(start, &want, tok.bytes()));
        }
        Ok(())
    }

    fn unexpected(&self, offset: u64, want: &str, found: &[u8]) -> NarError {
        let found = String::from_utf8_lossy(found);
        self.invalid(offset, format!("expected {want}, found '{found}'"))
    }

    fn invalid(&self, offset: u64, reason: impl Into<String>) -> NarError {
        let mut path: Vec<&[u8]> = self
            .dirs
            .iter()
            .skip(1)
            .map(|d| d.name.as_slice())
            .collect();
        if !self.entry.is_empty() {
            path.push(&self.entry);
        }
        let entry = if path.is_empty() {
            "root".to_string()
        } else {
            format!("entry '{}'", String::from_utf8_lossy(&path.join(&b'/')))
        };
        NarError::Invalid {
            offset,
            entry,
            reason: reason.into(),
        }
    }
}

/// Checks an entry name: non-empty, not `.` or `..`, no `/` or NUL.
fn check_name(name: &[u8]) -> Result<(), &'static str> {
    match name {
        b"" => Err("empty entry name"),
        b"." | b".." => Err("entry name is '.' or '..'"),
        _ if name.contains(&b'/') => Err("entry name contains '/'"),
        _ if name.contains(&0) => Err("entry name contains NUL"),
        _ => Ok(()),
    }
}

/// The contents of the current file of a [`NarReader`], as a [`Read`].
pub struct FileContents<'a, R> {
    nar: &'a mut NarReader<R>,
}

impl<R: Read> Read for FileContents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.nar.read_contents(buf).map_err(io::Error::other)
    }
}

/// Parses a whole NAR from `r`, checking that nothing follows it, and
/// returns its size and SHA-256.
pub fn validate(r: impl Read) -> Result<NarStats, NarError> {
    let mut nar = NarReader::new(BufReader::with_capacity(256 * 1024, r));
    while nar.next()?.is_some() {}
    let stats = nar.stats().ok_or(NarError::Truncated {
        offset: nar.offset(),
    })?;
    let mut rest = nar.into_inner();
    let mut byte = [0u8; 1];
    loop {
        match rest.read(&mut byte) {
            Ok(0) => return Ok(stats),
            Ok(_) => return Err(NarError::TrailingData { offset: stats.size }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(NarError::Read {
                    offset: stats.size,
                    source,
                })
            }
        }
    }
}
