//! The library's tests against real Nix and throwaway nodes, one module per
//! area, in one test binary (one link of the library's test code instead of
//! one per file: most of this crate's compile time). The tests that measure
//! time or bytes (`fanout.rs`, `copy_compressed.rs`) keep binaries of their
//! own, so that nothing of this binary runs beside them.

mod flake_support;

mod activation;
mod apt_install;
mod copy_local;
mod copy_ssh;
mod deploy_nodes;
mod flake_outputs;
mod install_closure;
mod inventory;
mod prepare;
mod signing;
