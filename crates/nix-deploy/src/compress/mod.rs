//! Compressed daemon connections. With zstd, the deployer compresses what it
//! sends ([`ZstdWriter`], its level set by [`ZstdControl`]) and the node's
//! `nix-daemon --stdio` reads it through [`Receiver`], the
//! `nix-deploy-receive` program of the `deploy-receive` crate, pushed into
//! the node's store first. One connection's compressed stream may be
//! carried by several SSH channels ([`Striped`]). Answers come back
//! uncompressed (they are small).

mod control;
mod receiver;
mod stream;
mod striped;
mod writer;

pub use control::{Decision, OnDecision, ZstdControl};
pub use receiver::{rendezvous_name, Receiver, ReceiverError};
pub use stream::MaybeZstd;
pub use striped::Striped;
pub use writer::ZstdWriter;
