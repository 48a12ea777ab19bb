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
//! (§8.1), with two exceptions. [`MAX_DEPTH`]: Nix ≥ 2.28.7 stops at 63
//! levels below the root; we accept 256 so that deep trees Nix 2.8 archived
//! still parse, while memory (and the unpacker's open directory handles)
//! stay bounded. [`MAX_TOKEN_LEN`]: 64 rather than Nix's 32, harmless since
//! the longest real token has 13 bytes and any other token is rejected.
//!
//! The reader does not buffer: it consumes exactly the NAR's bytes, so a NAR
//! embedded in a protocol stream can be parsed in place. Wrap unbuffered
//! sources (sockets, files) in a [`std::io::BufReader`].

use std::io::{self, BufReader, Read};

use super::input::{invalid, unexpected, Input};
use super::{NarError, NarStats, MAGIC};

pub use super::input::MAX_TOKEN_LEN;

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

/// Pull parser for one NAR read from `R`. See the [module docs](self).
pub struct NarReader<R> {
    input: Input<R>,
    state: State,
    /// Open directories, innermost last.
    dirs: Vec<Dir>,
    /// Name of the node being parsed, for error messages.
    entry: Vec<u8>,
    stats: Option<NarStats>,
}

impl<R: Read> NarReader<R> {
    /// A parser reading a NAR from the current position of `r`.
    pub fn new(r: R) -> Self {
        NarReader {
            input: Input::new(r),
            state: State::Start,
            dirs: Vec::new(),
            entry: Vec::new(),
            stats: None,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.input.offset()
    }

    /// Size and SHA-256 of the NAR, once `next` has returned `Ok(None)`.
    pub fn stats(&self) -> Option<NarStats> {
        self.stats
    }

    /// Gives back the underlying reader, positioned after the bytes consumed.
    pub fn into_inner(self) -> R {
        self.input.into_inner()
    }

    /// The next node, or `None` after the end of the NAR. Skips the rest of
    /// the current file's contents if they were not read. After an error the
    /// reader's position is unspecified: stop using it.
    // Not `Iterator::next`: the end is `Ok(None)` and errors are final.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Event>, NarError> {
        self.step().map_err(|e| self.locate(e))
    }

    fn step(&mut self) -> Result<Option<Event>, NarError> {
        if let State::Contents { size, remaining } = self.state {
            self.input.skip(remaining)?;
            self.input.read_padding(size)?;
            self.input.expect(b")")?;
            self.node_done()?;
        }
        match self.state {
            State::Start => {
                self.input.expect(MAGIC)?;
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
        let n = self.input.read_some(&mut buf[..want])?;
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
        let start = self.input.offset();
        let tok = self.input.read_token()?;
        match tok.bytes() {
            b")" => {
                let dir = self
                    .dirs
                    .pop()
                    .ok_or_else(|| invalid(start, "unbalanced ')'"))?;
                self.entry = dir.name;
                self.node_done()?;
                Ok(Event::EndDirectory)
            }
            b"entry" => {
                self.input.expect(b"(")?;
                self.input.expect(b"name")?;
                let start = self.input.offset();
                let name = self.input.read_str(MAX_NAME_LEN, "entry name")?;
                self.entry = name.clone();
                check_name(&name).map_err(|r| invalid(start, r))?;
                let sorted = match self.dirs.last().and_then(|d| d.last.as_deref()) {
                    Some(last) if last == name.as_slice() => Err("duplicate entry name"),
                    Some(last) if last > name.as_slice() => Err("names not sorted"),
                    _ => Ok(()),
                };
                sorted.map_err(|r| invalid(start, r))?;
                if let Some(d) = self.dirs.last_mut() {
                    d.last = Some(name.clone());
                }
                self.input.expect(b"node")?;
                self.node(name)
            }
            other => Err(unexpected(start, "'entry' or ')'", other)),
        }
    }

    /// Parses a node up to its first event.
    fn node(&mut self, name: Vec<u8>) -> Result<Event, NarError> {
        self.input.expect(b"(")?;
        self.input.expect(b"type")?;
        let start = self.input.offset();
        let tok = self.input.read_token()?;
        match tok.bytes() {
            b"regular" => {
                let start = self.input.offset();
                let mut tok = self.input.read_token()?;
                let executable = tok.bytes() == b"executable";
                if executable {
                    let start = self.input.offset();
                    let empty = self.input.read_token()?;
                    if !empty.bytes().is_empty() {
                        return Err(unexpected(start, "''", empty.bytes()));
                    }
                    tok = self.input.read_token()?;
                }
                if tok.bytes() != b"contents" {
                    return Err(unexpected(start, "'contents'", tok.bytes()));
                }
                let size = self.input.read_u64()?;
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
                self.input.expect(b"target")?;
                let start = self.input.offset();
                let target = self.input.read_str(MAX_TARGET_LEN, "symlink target")?;
                if target.is_empty() || target.contains(&0) {
                    return Err(invalid(start, "symlink target is empty or contains NUL"));
                }
                self.input.expect(b")")?;
                self.node_done()?;
                Ok(Event::Symlink { name, target })
            }
            b"directory" => {
                if self.dirs.len() >= MAX_DEPTH {
                    return Err(invalid(
                        start,
                        format!("directories nested deeper than {MAX_DEPTH}"),
                    ));
                }
                self.dirs.push(Dir {
                    name: name.clone(),
                    last: None,
                });
                self.entry.clear();
                self.state = State::InDir;
                Ok(Event::Directory { name })
            }
            other => Err(unexpected(
                start,
                "'regular', 'symlink' or 'directory'",
                other,
            )),
        }
    }

    /// After a node's closing `")"`: closes its entry, or ends the NAR.
    fn node_done(&mut self) -> Result<(), NarError> {
        if self.dirs.is_empty() {
            self.state = State::Done;
            self.stats = Some(self.input.stats());
        } else {
            self.input.expect(b")")?;
            self.state = State::InDir;
        }
        Ok(())
    }

    /// Fills in where an [`NarError::Invalid`] happened: `root` or
    /// `entry 'a/b'`, from the parser's current position.
    fn locate(&self, err: NarError) -> NarError {
        let NarError::Invalid {
            offset,
            entry,
            reason,
        } = err
        else {
            return err;
        };
        if !entry.is_empty() {
            return NarError::Invalid {
                offset,
                entry,
                reason,
            };
        }
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
            reason,
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
