//! The primitives the worker and serve protocols are built from (reference
//! §1): little-endian u64s, strict booleans, zero-padded byte strings,
//! string lists and store paths, plus framed streams ([`framed`]).
//!
//! Every reader takes a caller-given limit and checks it *before*
//! allocating, so a hostile or desynchronised peer cannot make us allocate
//! absurd amounts of memory; counts never pre-allocate.

pub mod framed;

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::store_path::{StorePath, StorePathError};

pub use framed::{FramedSink, FramedSource, MAX_FRAME};

/// Longest store path string we accept (Nix's own limit is far below).
pub const MAX_PATH_LEN: u64 = 4096;

/// Default limit for short strings (versions, hashes, CA fields, names).
pub const MAX_SHORT_STRING: u64 = 65536;

/// Limit for log lines and error messages.
pub const MAX_TEXT: u64 = 1 << 20;

/// Longest store path a daemon may send: a store directory (`/nix/store`
/// is 10 bytes; room is left for longer ones), a 32-character hash, `-`
/// and a name of at most 211 characters.
pub const MAX_STORE_PATH_LEN: u64 = 1024;

/// Most store paths in one list a daemon may send (a million: far beyond
/// any closure), so one list takes at most 1 GiB however it is forged.
pub const MAX_PATHS: u64 = 1 << 20;

/// Why bytes from the peer could not be read or written as protocol data.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The underlying stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the stream in the middle of a message.
    #[error("connection closed in the middle of a message (the daemon exited or the stream was cut): {0}")]
    Eof(io::Error),
    /// A length field exceeds the limit for what is being read.
    #[error("daemon sent a {what} of {len} bytes, limit {limit} (protocol desync?)")]
    TooLong {
        /// What was being read.
        what: &'static str,
        /// The length the peer announced.
        len: u64,
        /// The largest length accepted here.
        limit: u64,
    },
    /// A count field exceeds the limit for what is being read.
    #[error("daemon sent a {what} with {count} elements, limit {limit} (protocol desync?)")]
    TooMany {
        /// What was being read.
        what: &'static str,
        /// The count the peer announced.
        count: u64,
        /// The largest count accepted here.
        limit: u64,
    },
    /// The padding after a string was not all zero bytes.
    #[error("non-zero padding after a string (protocol desync?)")]
    BadPadding,
    /// A boolean was neither 0 nor 1.
    #[error("daemon sent {0} where a boolean (0 or 1) was expected (protocol desync?)")]
    BadBool(u64),
    /// A string that must be text was not UTF-8.
    #[error("daemon sent a {what} that is not UTF-8 (protocol desync?)")]
    NotUtf8 {
        /// What was being read.
        what: &'static str,
    },
    /// A string that must be a store path was not one.
    #[error("daemon sent an invalid store path: {0}")]
    BadStorePath(#[from] StorePathError),
    /// The data does not follow the protocol's grammar.
    #[error("malformed data: {0} (protocol desync?)")]
    Malformed(String),
}

impl WireError {
    /// Wraps an I/O error, keeping end-of-stream apart from other failures.
    pub fn from_io(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            WireError::Eof(e)
        } else {
            WireError::Io(e)
        }
    }
}

/// Result of the wire primitives.
pub type Result<T> = std::result::Result<T, WireError>;

/// Reads one u64, little-endian.
pub async fn read_u64<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).await.map_err(WireError::from_io)?;
    Ok(u64::from_le_bytes(b))
}

/// Writes one u64, little-endian.
pub async fn write_u64<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, v: u64) -> Result<()> {
    w.write_all(&v.to_le_bytes()).await?;
    Ok(())
}

/// Reads a boolean, accepting exactly 0 or 1 (as Nix's `>>` does).
pub async fn read_bool<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<bool> {
    match read_u64(r).await? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(WireError::BadBool(v)),
    }
}

/// Writes a boolean as exactly 0 or 1.
pub async fn write_bool<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, v: bool) -> Result<()> {
    write_u64(w, u64::from(v)).await
}

/// Padding after a string of `len` bytes.
fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// Reads a padded byte string of at most `max` bytes; `what` names it in errors.
pub async fn read_bytes<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: u64,
    what: &'static str,
) -> Result<Vec<u8>> {
    let len = read_u64(r).await?;
    if len > max {
        return Err(WireError::TooLong {
            what,
            len,
            limit: max,
        });
    }
    let n = usize::try_from(len).map_err(|_| WireError::TooLong {
        what,
        len,
        limit: max,
    })?;
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).await.map_err(WireError::from_io)?;
    let pad = padding(len);
    let mut p = [0u8; 8];
    r.read_exact(&mut p[..pad])
        .await
        .map_err(WireError::from_io)?;
    if p.iter().any(|&b| b != 0) {
        return Err(WireError::BadPadding);
    }
    Ok(buf)
}

/// Reads a padded UTF-8 string of at most `max` bytes.
pub async fn read_string<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: u64,
    what: &'static str,
) -> Result<String> {
    String::from_utf8(read_bytes(r, max, what).await?).map_err(|_| WireError::NotUtf8 { what })
}

/// Reads a padded string of at most `max` bytes as text, replacing invalid
/// UTF-8 (for log lines and messages, which Nix does not promise are UTF-8).
pub async fn read_string_lossy<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: u64,
    what: &'static str,
) -> Result<String> {
    let bytes = read_bytes(r, max, what).await?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Writes a padded byte string.
pub async fn write_bytes<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, data: &[u8]) -> Result<()> {
    let len = data.len() as u64;
    write_u64(w, len).await?;
    w.write_all(data).await?;
    w.write_all(&[0u8; 8][..padding(len)]).await?;
    Ok(())
}

/// Reads a string list of at most `max_count` strings of at most `max_len`
/// bytes each. Nothing is reserved from the announced count.
pub async fn read_strings<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max_count: u64,
    max_len: u64,
    what: &'static str,
) -> Result<Vec<String>> {
    let count = read_count(r, max_count, what).await?;
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(read_string(r, max_len, what).await?);
    }
    Ok(out)
}

/// Reads a count and checks it against `max`.
pub async fn read_count<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: u64,
    what: &'static str,
) -> Result<u64> {
    let count = read_u64(r).await?;
    if count > max {
        return Err(WireError::TooMany {
            what,
            count,
            limit: max,
        });
    }
    Ok(count)
}

/// Writes a string list (or set) in iteration order.
pub async fn write_strings<W, I, S>(w: &mut W, items: I) -> Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    I: IntoIterator<Item = S>,
    I::IntoIter: ExactSizeIterator,
    S: AsRef<[u8]>,
{
    let items = items.into_iter();
    write_u64(w, items.len() as u64).await?;
    for s in items {
        write_bytes(w, s.as_ref()).await?;
    }
    Ok(())
}

/// Reads a store path (a full `/nix/store/…` string).
pub async fn read_store_path<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<StorePath> {
    let s = read_string(r, MAX_STORE_PATH_LEN, "store path").await?;
    Ok(StorePath::parse(&s)?)
}

/// Reads an optional store path, where `""` means none.
pub async fn read_opt_store_path<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
) -> Result<Option<StorePath>> {
    let s = read_string(r, MAX_STORE_PATH_LEN, "store path").await?;
    if s.is_empty() {
        return Ok(None);
    }
    Ok(Some(StorePath::parse(&s)?))
}

/// Reads a list of store paths of at most `max_count` elements.
pub async fn read_store_paths<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max_count: u64,
) -> Result<Vec<StorePath>> {
    let count = read_count(r, max_count, "store path list").await?;
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(read_store_path(r).await?);
    }
    Ok(out)
}

/// Writes a store path as its full printed form.
pub async fn write_store_path<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    p: &StorePath,
) -> Result<()> {
    write_bytes(w, p.to_string().as_bytes()).await
}

/// Writes a list of store paths.
pub async fn write_store_paths<'a, W, I>(w: &mut W, paths: I) -> Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    I: IntoIterator<Item = &'a StorePath>,
    I::IntoIter: ExactSizeIterator,
{
    // Rendered before the first await, so the future holds no closure over
    // borrowed paths (which would stop callers' futures from being `Send`).
    let paths: Vec<String> = paths.into_iter().map(|p| p.to_string()).collect();
    write_strings(w, &paths).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[tokio::test]
    async fn string_layout_matches_the_reference() {
        let mut out = Vec::new();
        write_bytes(&mut out, b"2.8.0").await.unwrap();
        assert_eq!(
            out,
            [5, 0, 0, 0, 0, 0, 0, 0, b'2', b'.', b'8', b'.', b'0', 0, 0, 0]
        );
        let back = read_string(&mut Cursor::new(out), 16, "version").await;
        assert_eq!(back.unwrap(), "2.8.0");
        let mut empty = Vec::new();
        write_bytes(&mut empty, b"").await.unwrap();
        assert_eq!(empty, [0u8; 8]);
    }

    #[tokio::test]
    async fn absurd_length_errors_before_allocating() {
        let data = (1u64 << 60).to_le_bytes();
        let err = read_bytes(&mut Cursor::new(data), MAX_SHORT_STRING, "string")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "daemon sent a string of 1152921504606846976 bytes, limit 65536 (protocol desync?)"
        );
    }

    #[tokio::test]
    async fn bad_padding_and_bools_are_rejected() {
        let mut data = vec![1, 0, 0, 0, 0, 0, 0, 0, b'x', 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            read_bytes(&mut Cursor::new(&data), 8, "s").await,
            Err(WireError::BadPadding)
        ));
        data.truncate(10);
        assert!(matches!(
            read_bytes(&mut Cursor::new(&data), 8, "s").await,
            Err(WireError::Eof(_))
        ));
        let two = 2u64.to_le_bytes();
        assert!(matches!(
            read_bool(&mut Cursor::new(two)).await,
            Err(WireError::BadBool(2))
        ));
    }
}
