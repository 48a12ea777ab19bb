//! Nix's own formats, written from the specification (the crate registry's
//! `nix-compat` is an empty placeholder): store paths and nixbase32, SHA-256
//! hash forms, the NAR archive format and a client of the daemon worker
//! protocol. No SSH, no CLI: transports are anything `AsyncRead + AsyncWrite`.
//!
//! Where each piece lives:
//! - [`base32`], [`hash`], [`store_path`]: names and digests;
//! - [`nar`]: streaming encoder, validating decoder, safe unpacker;
//! - [`narinfo`]: the binary-cache format's `.narinfo` files;
//! - [`wire`]: the protocol's primitives (u64s, padded strings, framed streams);
//! - [`daemon`]: handshake, STDERR loop, operations and local transports;
//! - [`signing`]: Nix's Ed25519 key and signature formats and path fingerprints.

pub mod base32;
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod signing;
pub mod store_path;
pub mod wire;

pub use hash::Sha256Hash;
pub use store_path::StorePath;
