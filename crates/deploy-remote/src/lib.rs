//! Commands on nodes: the one way every remote command of a deploy runs.
//!
//! - [`shell`]: POSIX quoting, and the command line that has any login
//!   shell `exec /bin/sh -c` the script, under coreutils' `timeout`;
//! - [`run`], [`run_with`], [`probe`]: a command with its stdin fed from
//!   memory (secrets and file contents never go into an argv), a
//!   [`Limits`] timeout on both ends and a cap on its stdout, and errors
//!   that name the node, the command, its status and its stderr;
//! - [`mod@file`]: the files a deploy owns on nodes (atomic, written only when
//!   their content changes);
//! - [`nix_conf`]: our block of the node's `/etc/nix/nix.conf`.
//!
//! Long-lived streams (daemon connections, the node lock, the link probe)
//! use `deploy-ssh` directly. This crate knows SSH through `deploy-ssh`
//! and nothing of Nix stores or of the deploy: it must not depend on
//! `nix-wire` or `nix-deploy`.

mod exec;
pub mod file;
pub mod nix_conf;
pub mod shell;

pub use exec::{node_name, probe, run, run_with, CommandError, Limits, Probed};
pub use shell::quote;
