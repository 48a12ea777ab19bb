//! The SSH transport's tests against Debian's OpenSSH sshd and ssh-agent,
//! one module per area, in one test binary (one link instead of one per
//! file).

mod common;

mod auth;
mod config;
mod fuzz_corpus;
mod host_keys;
mod transport;
