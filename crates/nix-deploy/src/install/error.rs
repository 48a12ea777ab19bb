//! Why installing Nix on a node failed: every message names the node (or
//! the local store) and says what to do.

use deploy_ssh::SshError;
use nix_wire::daemon;

use super::stream::LocalError;
use crate::closure::ClosureError;
use crate::trust::TrustError;

/// Why installing Nix failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Installing needs root on the node.
    #[error(
        "{node}: installing Nix needs root, but the SSH user is `{user}`: connect as root \
         (sshUser = \"root\" in the inventory) or install Nix there yourself with sudo, then \
         run `deploy prepare` again"
    )]
    NotRoot {
        /// The node.
        node: String,
        /// The SSH user.
        user: String,
    },
    /// The `apt` method failed.
    #[error(transparent)]
    Apt(#[from] crate::apt_install::AptInstallError),
    /// The deployer's own store could not be asked.
    #[error("the deployer's Nix store: {0}")]
    LocalStore(#[from] daemon::Error),
    /// The Nix package's closure is not in the deployer's store.
    #[error("the Nix package to install: {0} (build it first, e.g. with `nix build`)")]
    Closure(#[from] ClosureError),
    /// Reading a path of the closure locally failed.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// The SSH command could not run.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A step ran on the node and failed.
    #[error("{node}: {step} failed ({status}): {stderr}")]
    Command {
        /// The node.
        node: String,
        /// What we were doing.
        step: &'static str,
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// A step's output made no sense.
    #[error("{node}: {step}: unexpected output {output:?}")]
    Unexpected {
        /// The node.
        node: String,
        /// What we were doing.
        step: &'static str,
        /// What it printed.
        output: String,
    },
    /// Writing our settings to nix.conf failed.
    #[error(transparent)]
    NixConf(#[from] TrustError),
}
