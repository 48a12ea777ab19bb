//! The cluster stages: plugins of the deploy library's
//! [`Stage`](nix_deploy::stage::Stage) trait that a deploy runs on each node
//! after its profile switch and before its confirmation. The CLI registers
//! them; an embedder deploying plain profiles does without this crate.
//!
//! - [`k3s`]: k3s from the profile's own binary, servers before agents,
//!   the join token through SSH only, restarts only where something changed;
//! - [`ingress`]: Traefik, cert-manager and the Let's Encrypt issuers as
//!   k3s auto-deploy manifests rendered from the cluster settings, and the
//!   stage writing them on the servers.
//!
//! Depends on the core library (`nix-deploy`: inventory, stage trait) and
//! the remote-command layer; nothing below it depends on this crate.

pub mod ingress;
pub mod k3s;
