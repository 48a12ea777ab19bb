//! The deploy library: everything between "a profile is built locally" and
//! "it runs on the node". It never prints: results are typed, progress is a
//! stream of typed events, and every long operation can be cancelled.
//!
//! - [`remote`]: how to open daemon connections to a node (SSH exec
//!   channels running `nix-daemon --stdio`, or any local command);
//! - [`copy`]: the copy engine, pushing a closure to a node's store.

pub mod copy;
pub mod inventory;
pub mod nix_cli;
pub mod remote;
