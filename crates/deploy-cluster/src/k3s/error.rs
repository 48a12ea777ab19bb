//! [`K3sError`]: why the k3s stage failed on a node, naming the node and
//! what to do.

use std::time::Duration;

use deploy_remote::CommandError;
use deploy_ssh::SshError;

use super::plan::API_PORT;

/// Why the k3s stage failed on a node.
#[derive(Debug, thiserror::Error)]
pub enum K3sError {
    /// SSH failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The SSH user is not root.
    #[error("{node}: setting up k3s needs root on the node: deploy as root (sshUser = \"root\")")]
    NotRoot {
        /// The node.
        node: String,
    },
    /// The profile has no k3s.
    #[error(
        "{node}: {path} is missing: add pkgs.k3s to the node's host profile (hosts/{node}.nix)"
    )]
    NoK3s {
        /// The node.
        node: String,
        /// Where k3s was looked for.
        path: String,
    },
    /// The profile has no install script.
    #[error("{node}: {path} is missing: add (pkgs.callPackage ../nix/k3s-install.nix {{ }}) to hosts/{node}.nix")]
    NoInstallScript {
        /// The node.
        node: String,
        /// Where it was looked for.
        path: String,
    },
    /// The server has no token.
    #[error(
        "server {server} has no join token at {path}: is k3s running there? (systemctl status k3s)"
    )]
    NoToken {
        /// The server.
        server: String,
        /// Where it was looked for.
        path: &'static str,
    },
    /// The API did not answer in time.
    #[error("{node}: the k3s API did not answer within {} s (waited for `k3s kubectl get --raw=/readyz` to say ok); last answer: {last}; see `journalctl -u k3s` on {node}", waited.as_secs())]
    ApiTimeout {
        /// The server.
        node: String,
        /// How long it waited.
        waited: Duration,
        /// The last answer.
        last: String,
    },
    /// A node did not become Ready in time.
    #[error("{node}: not Ready within {} s (asked server {server}: `kubectl get node {node}`); last status: {last}; see `journalctl -u {service}` on {node}", waited.as_secs())]
    NotReady {
        /// The node.
        node: String,
        /// Its unit.
        service: &'static str,
        /// The server asked.
        server: String,
        /// How long it waited.
        waited: Duration,
        /// The last status.
        last: String,
    },
    /// A joining node's server failed in this deploy.
    #[error("{node}: not joined: its server {server} failed in this deploy ({reason})")]
    ServerFailed {
        /// The joining node.
        node: String,
        /// The server.
        server: String,
        /// Why the server failed.
        reason: String,
    },
    /// A joining node's server did not get its API up in time.
    #[error("{node}: not joined: server {server}'s k3s API was not up within {} s", waited.as_secs())]
    ServerTimeout {
        /// The joining node.
        node: String,
        /// The server.
        server: String,
        /// How long it waited.
        waited: Duration,
    },
    /// A joining node can't reach its server's API port.
    #[error("{node} can't reach the k3s server at {url} (no TCP connection within 5 s): open port {API_PORT}/tcp from {node} to the server (firewall, ufw) and check the server's address")]
    Unreachable {
        /// The joining node.
        node: String,
        /// The server URL.
        url: String,
    },
    /// The inventory has no server for this node to join.
    #[error("{node}: no k3s server in the inventory to join")]
    NoServer {
        /// The node.
        node: String,
    },
}
