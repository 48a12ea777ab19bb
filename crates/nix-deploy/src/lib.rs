//! The deploy library: everything between "a profile is built locally" and
//! "it runs on the node". It never prints: results are typed, progress is a
//! stream of typed events, and every long operation can be cancelled.
//!
//! - [`nix_cli`]: running `nix` (evaluation, builds) with Nix's errors kept;
//! - [`inventory`]: the flake's `deploy` output, checked, and building profiles;
//! - [`remote`]: how to open daemon connections to a node (SSH exec
//!   channels running `nix-daemon --stdio`, or any local command);
//! - [`closure`]: closures with path infos, from any store's daemon;
//! - [`compress`]: zstd connections (the sender's writer and level
//!   control, and the node's receiver program);
//! - [`link`]: measuring a node's link (round trip, bandwidth, SSH window);
//! - [`copy`]: the copy engine, pushing a closure to a node's store;
//! - [`cache`]: pushing closures to a binary cache the nodes substitute from;
//! - [`keys`]: the deployer's own signing key;
//! - [`trust`]: making a node trust that key (our block of nix.conf);
//! - [`install`]: installing Nix on a node without it (the `closure` method);
//! - [`prepare`]: what a node has, and making it trust our key;
//! - [`apt_install`]: installing Nix on a Debian node with apt (`nix-bin`);
//! - [`profile`]: reading and switching a node's profile;
//! - [`activate`]: generations, rollback, the safe-rollback watchdog, the
//!   node lock, PATH for login shells;
//! - [`stage`]: steps run after the switch, before confirmation (the
//!   trait the cluster stages of `deploy-cluster` implement);
//! - [`node_plan`]: what to deploy where;
//! - [`diff`]: the preview of what a deploy would change on a node;
//! - [`deploy`]: the entry point: deploy or preview many nodes in parallel.
//!
//! Below it: `nix-wire`, `deploy-ssh`, `deploy-remote`, `deploy-receive`.
//! It must not depend on the cluster stages (`deploy-cluster`) or the CLI:
//! an embedder deploys profiles with this crate alone.

pub mod activate;
pub mod apt_install;
pub mod cache;
pub mod closure;
pub mod compress;
pub mod copy;
pub mod deploy;
pub mod diff;
pub mod fanout;
pub mod install;
pub mod inventory;
pub mod keys;
pub mod link;
pub mod nix_cli;
pub mod node_plan;
pub mod prepare;
pub mod profile;
pub mod remote;
pub mod stage;
pub mod trust;
