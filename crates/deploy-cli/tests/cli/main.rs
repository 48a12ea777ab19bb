//! The `deploy` binary's tests against real Nix and throwaway nodes, one
//! module per area, in one test binary (one link instead of one per file).

mod common;

mod binary_cache;
mod copy_command;
mod copy_signed;
mod faults;
mod k3s_cluster;
mod prepare_install;
mod rollout;
mod store_commands;
mod template;
