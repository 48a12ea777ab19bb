//! Throwaway "VPS" nodes on this machine, for tests, benchmarks and demos.
//!
//! Each node is a network namespace joined by a veth pair to its cluster's
//! bridge on the host (one /24 of 10.213.0.0/16 per cluster: the host and the
//! nodes reach each other), private mount, UTS and pid namespaces, and a real
//! OpenSSH `sshd` on port 22 with its own ed25519 host key, authorizing the
//! cluster's client key for `root` and the unprivileged `deploy`:
//!
//! - [`NodeKind::Trixie`]: a Debian 13 root with Nix 2.26, an overlay of the
//!   read-only `node-trixie` template with a private upper layer, chrooted;
//! - [`NodeKind::Bare`]: the same without Nix (`node-bare`);
//! - [`NodeKind::LocalNix`]: this machine's system and Nix 2.8 with a private
//!   `/nix`, `/etc`, `/root`, `/home`, `/run` and `/tmp`.
//!
//! With [`ClusterSpec::with_apt_mirror`], the template nodes' apt reaches the
//! Debian mirror through a proxy on the host (nothing is routed).
//!
//! A [`CacheServer`] serves a binary cache to the nodes from the host: nginx
//! over HTTP (uploads by `PUT`) or moto's S3 server with one bucket.
//!
//! The templates are made once by `scripts/setup-test-machine`. Everything is
//! named `nd-...` and recorded under [`STATE_ROOT`]; dropping a [`Cluster`]
//! removes it all, and [`Cluster::start`] first reaps what crashed runs left.
//! Needs root.
//!
//! ```no_run
//! use test_cluster::{Cluster, ClusterSpec, NodeKind};
//! let cluster = Cluster::start(&ClusterSpec::uniform(NodeKind::Trixie, 2))?;
//! let node = &cluster.nodes()[0];
//! assert!(node.run_ok("nix-store --version")?.contains("2.26"));
//! # Ok::<(), test_cluster::ClusterError>(())
//! ```

mod apt_proxy;
mod cache_server;
mod cluster;
mod cmd;
mod error;
mod net;
mod node;
mod rootfs;
mod spec;
mod state;

pub use cache_server::CacheServer;
pub use cluster::Cluster;
pub use error::{ClusterError, Result};
pub use node::Node;
pub use spec::{ClusterSpec, NodeKind, NodeSpec};
pub use state::{reap_stale, DATA_ROOT, STATE_ROOT};
