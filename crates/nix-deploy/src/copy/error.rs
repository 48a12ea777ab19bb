//! Why a copy failed, with the explanation of a refusal by the node.

use nix_wire::daemon;
use nix_wire::signing::FingerprintError;
use nix_wire::StorePath;

use crate::remote::ConnectError;

/// Why a copy failed. Every message names the node.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The local store failed.
    #[error("local store: {0}")]
    Local(#[source] daemon::Error),
    /// A root (or a reference of one) is not in the local store.
    #[error("{path} is not valid in the local store: build it first")]
    NotInLocalStore {
        /// The path.
        path: StorePath,
    },
    /// Opening a daemon connection to the node failed.
    #[error("{node}: cannot open its Nix daemon: {source}")]
    Connect {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: ConnectError,
    },
    /// The node's daemon failed.
    #[error("{node}: {source}")]
    Remote {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: daemon::Error,
    },
    /// An upload connection failed, and its far end said why on stderr
    /// (the node's daemon, or the receiver in front of it).
    #[error("{node}: {source}; on the node: {said}")]
    Connection {
        /// The node.
        node: String,
        /// Why, as the protocol saw it.
        #[source]
        source: daemon::Error,
        /// What the node's side printed on stderr.
        said: String,
    },
    /// The node refused an unsigned path from an untrusted user.
    #[error("{}", untrusted_message(node, path, message, signed_with.as_deref()))]
    Untrusted {
        /// The node.
        node: String,
        /// The first refused path.
        path: StorePath,
        /// The daemon's words.
        message: String,
        /// The public key we signed with, if we signed.
        signed_with: Option<String>,
    },
    /// The node found a path's NAR different from the hash the local store
    /// recorded: the local copy was modified.
    #[error(
        "local store path {path} does not match its recorded NAR hash ({node} refused it: \
         {message}): it was modified; repair it with `nix-store --repair-path {path}`"
    )]
    LocalModified {
        /// The node.
        node: String,
        /// The path.
        path: StorePath,
        /// The daemon's words.
        message: String,
    },
    /// A path could not be signed.
    #[error("cannot sign: {0}")]
    Sign(#[source] FingerprintError),
    /// The paths reference each other in a cycle (a corrupt store).
    #[error("the closure has a reference cycle among {0:?}; the local store is corrupt")]
    Cycle(Vec<StorePath>),
    /// The caller cancelled the copy.
    #[error("{node}: copy cancelled")]
    Cancelled {
        /// The node.
        node: String,
    },
}

fn untrusted_message(node: &str, path: &StorePath, message: &str, key: Option<&str>) -> String {
    let head = format!(
        "{node} refused {path}: it has no signature by a key the node trusts, and the SSH user is \
         not a trusted user of the node's Nix ({message})."
    );
    match key {
        Some(key) => format!(
            "{head} The paths were signed with the deployer key {key}, which the node does not \
             trust: add it to `trusted-public-keys` in /etc/nix/nix.conf on the node (e.g. with \
             `deploy prepare`) and restart its nix-daemon; or deploy as root or add the user to \
             `trusted-users`"
        ),
        None => format!(
            "{head} Fix one of: deploy as root or add the user to `trusted-users` in the node's \
             /etc/nix/nix.conf; or sign the paths (`--sign`) with a key listed in the node's \
             `trusted-public-keys`"
        ),
    }
}
