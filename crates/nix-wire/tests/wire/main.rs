//! The wire crate's tests (the daemon protocol against real and scripted
//! daemons, NARs against Nix, the fuzz corpora), one module per area, in
//! one test binary (one link instead of one per file). `fuzz_wire.rs` and
//! `nar_alloc.rs` keep binaries of their own: each installs a global
//! allocator that counts.

#[path = "../common/mod.rs"]
mod common;
mod nar_support;

mod daemon_closure;
mod daemon_concurrency;
mod daemon_errors;
mod daemon_handshake;
mod daemon_transport;
mod fuzz_corpus;
mod fuzz_nar;
mod nar_async;
mod nar_decode;
mod nar_vs_nix;
mod signing_vs_nix;
