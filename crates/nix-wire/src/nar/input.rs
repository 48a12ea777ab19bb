//! Byte-level input of the NAR decoder: counts and hashes every byte
//! consumed, reports truncation with its offset, and reads the grammar's
//! primitives (u64s, length-limited strings, tokens, zero padding). Errors
//! about content are [`NarError::Invalid`] with an empty `entry`, which the
//! decoder fills in.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::{padding, NarError, NarStats};
use crate::Sha256Hash;

/// Longest token string accepted (`"nix-archive-1"`, `"directory"`…).
pub const MAX_TOKEN_LEN: u64 = 64;

/// A token string, read into a stack buffer.
pub(super) struct Token {
    buf: [u8; MAX_TOKEN_LEN as usize],
    len: usize,
}

impl Token {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A reader that counts and hashes what the decoder consumes.
pub(super) struct Input<R> {
    r: R,
    offset: u64,
    hasher: Sha256,
    scratch: Vec<u8>,
}

/// An [`NarError::Invalid`] at `offset`, to be located by the decoder.
pub(super) fn invalid(offset: u64, reason: impl Into<String>) -> NarError {
    NarError::Invalid {
        offset,
        entry: String::new(),
        reason: reason.into(),
    }
}

impl<R: Read> Input<R> {
    pub(super) fn new(r: R) -> Self {
        Input {
            r,
            offset: 0,
            hasher: Sha256::new(),
            scratch: Vec::new(),
        }
    }

    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    pub(super) fn into_inner(self) -> R {
        self.r
    }

    /// Size and SHA-256 of everything consumed so far.
    pub(super) fn stats(&self) -> NarStats {
        NarStats {
            size: self.offset,
            sha256: Sha256Hash(self.hasher.clone().finalize().into()),
        }
    }

    /// Reads at least one byte; running out of input is truncation.
    pub(super) fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, NarError> {
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

    /// Consumes `n` bytes.
    pub(super) fn skip(&mut self, mut n: u64) -> Result<(), NarError> {
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

    pub(super) fn read_u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads the padding after a string of `len` bytes; it must be zero.
    pub(super) fn read_padding(&mut self, len: u64) -> Result<(), NarError> {
        let start = self.offset;
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding(len)];
        self.read_exact(pad)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(invalid(start, "non-zero padding"));
        }
        Ok(())
    }

    /// Reads a string's length and checks it against `limit` before
    /// anything is allocated.
    fn read_len(&mut self, limit: u64, what: &str) -> Result<usize, NarError> {
        let start = self.offset;
        let len = self.read_u64()?;
        if len > limit {
            let reason = format!("{what} of {len} bytes exceeds the limit of {limit}");
            return Err(invalid(start, reason));
        }
        Ok(len as usize)
    }

    /// Reads a string of at most `limit` bytes.
    pub(super) fn read_str(&mut self, limit: u64, what: &str) -> Result<Vec<u8>, NarError> {
        let len = self.read_len(limit, what)?;
        let mut s = vec![0u8; len];
        self.read_exact(&mut s)?;
        self.read_padding(len as u64)?;
        Ok(s)
    }

    pub(super) fn read_token(&mut self) -> Result<Token, NarError> {
        let len = self.read_len(MAX_TOKEN_LEN, "token")?;
        let mut tok = Token {
            buf: [0; MAX_TOKEN_LEN as usize],
            len,
        };
        self.read_exact(&mut tok.buf[..len])?;
        self.read_padding(len as u64)?;
        Ok(tok)
    }

    /// Reads a token that must be `want`.
    pub(super) fn expect(&mut self, want: &[u8]) -> Result<(), NarError> {
        let start = self.offset;
        let tok = self.read_token()?;
        if tok.bytes() != want {
            let want = format!("'{}'", String::from_utf8_lossy(want));
            return Err(unexpected(start, &want, tok.bytes()));
        }
        Ok(())
    }
}

/// "expected …, found '…'" at `offset`.
pub(super) fn unexpected(offset: u64, want: &str, found: &[u8]) -> NarError {
    let found = String::from_utf8_lossy(found);
    invalid(offset, format!("expected {want}, found '{found}'"))
}
