//! The NAR (Nix ARchive) format, §8 of `nix-protocols.md`: this module owns
//! everything that produces, parses or materialises NAR bytes.
//!
//! - [`encode`]: streaming encoder from a filesystem path, hashing as it goes
//!   ([`NarEncoder`], [`dump`], [`hash_path`]);
//! - [`async_reader`]: the encoder behind a `tokio::io::AsyncRead`
//!   ([`encode_async`]);
//! - [`decode`]: validating pull parser ([`NarReader`], [`validate`]);
//!   its byte-level reading (offsets, hashing, padding, length limits) is
//!   the private `input` module;
//! - [`mod@unpack`]: safe unpacker into a fresh directory ([`unpack()`]);
//! - [`error`]: the one error type, [`NarError`].
//!
//! Every producer and consumer here reports [`NarStats`]: the NAR's size and
//! SHA-256, i.e. Nix's `narSize` and `narHash`.

pub mod async_reader;
pub mod decode;
pub mod encode;
pub mod error;
mod input;
pub mod unpack;

pub use async_reader::{encode_async, encode_async_unhashed, AsyncNarReader};
pub use decode::{validate, Event, FileContents, NarReader};
pub use encode::{dump, hash_path, NarEncoder, DEFAULT_CHUNK_SIZE};
pub use error::NarError;
pub use unpack::unpack;

use crate::Sha256Hash;

/// Size and SHA-256 of a whole NAR byte stream (Nix's `narSize`, `narHash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NarStats {
    /// Length of the NAR in bytes.
    pub size: u64,
    /// SHA-256 over every byte of the NAR, header included.
    pub sha256: Sha256Hash,
}

/// The archive header token.
pub(crate) const MAGIC: &[u8] = b"nix-archive-1";

/// Zero bytes needed after `len` bytes to reach a multiple of 8.
pub(crate) fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

#[cfg(test)]
mod tests;
