//! What a deploy reports: per node, its [`NodeOutcome`] (a
//! [`NodeStatus`], or the [`NodeError`] that stopped it), and the
//! [`DeployEvent`]s sent while it runs.

use std::time::Duration;

use deploy_ssh::SshError;
use nix_wire::daemon;

use crate::activate::ActivationError;
use crate::closure::ClosureError;
use crate::copy::{CopyError, CopyEvent};
use crate::profile::ProfileError;
use crate::stage::StageError;

/// Why one node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Connecting over SSH failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The local store failed.
    #[error("local store: {0}")]
    Local(#[from] daemon::Error),
    /// Copying failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// Reading or switching the profile failed.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Reading the node's current closure failed.
    #[error("{node}: reading the current profile's closure: {source}")]
    Closure {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: ClosureError,
    },
    /// Nix could not be installed on the node.
    #[error(transparent)]
    Prepare(#[from] crate::prepare::PrepareError),
    /// The inventory's Nix for the node could not be had.
    #[error("{node}: has no Nix, and getting the Nix to install failed: {source}")]
    NixSource {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: StageError,
    },
    /// An activation step (lock, generations, watchdog, PATH) failed.
    #[error(transparent)]
    Activation(#[from] ActivationError),
    /// A stage after the switch failed.
    #[error("stage {stage}: {source}")]
    Stage {
        /// The stage's name.
        stage: String,
        /// Why.
        #[source]
        source: StageError,
    },
    /// The confirmation could not be sent; the node's watchdog rolls it
    /// back at its timeout.
    #[error("not confirmed ({0}); the node goes back to its previous generation when its watchdog expires")]
    NotConfirmed(Box<NodeError>),
    /// Another node failed and fail-fast was asked for, or the user cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The node's deploy took longer than [`crate::deploy::DeployOptions::node_timeout`].
    #[error("{node}: the deploy did not finish within {seconds} s and was stopped (its watchdog, if armed, rolls the node back); check the node, or allow more time (--node-timeout)")]
    TimedOut {
        /// The node.
        node: String,
        /// The timeout.
        seconds: u64,
    },
    /// The node's task panicked (a bug, in a stage or in nix-deploy): the
    /// node is in whatever state the deploy had reached; its watchdog, if
    /// armed, rolls it back.
    #[error("{node}: the deploy crashed: {message} (a bug; please report it)")]
    Panicked {
        /// The node.
        node: String,
        /// The panic's message.
        message: String,
    },
}

impl NodeError {
    /// The error for `node`'s deploy that panicked with `payload`.
    pub(super) fn panicked(node: &str, payload: Box<dyn std::any::Any + Send>) -> NodeError {
        let message = match (
            payload.downcast_ref::<&str>(),
            payload.downcast_ref::<String>(),
        ) {
            (Some(s), _) => (*s).to_owned(),
            (_, Some(s)) => s.clone(),
            _ => "a panic without a message".to_owned(),
        };
        NodeError::Panicked {
            node: node.to_owned(),
            message,
        }
    }

    /// The error for `node`'s task ending in `e` (a panic, or an abort).
    pub(super) fn from_join(node: &str, e: tokio::task::JoinError) -> NodeError {
        match e.try_into_panic() {
            Ok(payload) => NodeError::panicked(node, payload),
            Err(e) => NodeError::Panicked {
                node: node.to_owned(),
                message: e.to_string(),
            },
        }
    }
}

/// How a node's deploy ended.
#[derive(Debug)]
pub enum NodeStatus {
    /// Everything up to the goal was done.
    Done,
    /// It failed.
    Failed(NodeError),
    /// It was switched, then something failed (a stage, the confirmation)
    /// and the node is back, or goes back by itself, on its previous
    /// generation. Not a success.
    RolledBack {
        /// What failed.
        reason: NodeError,
        /// The generation the node is back on.
        generation: u64,
    },
}

impl NodeStatus {
    /// Whether the node got everything up to the goal.
    pub fn is_success(&self) -> bool {
        matches!(self, NodeStatus::Done)
    }
}

/// One node's result.
#[derive(Debug)]
pub struct NodeOutcome {
    /// The node's name.
    pub name: String,
    /// How it ended.
    pub status: NodeStatus,
    /// Store paths sent.
    pub sent_paths: usize,
    /// NAR bytes sent.
    pub sent_bytes: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// Progress of a deploy.
#[derive(Debug, Clone)]
pub enum DeployEvent {
    /// Progress of the push to the binary cache, which runs beside the
    /// nodes' deploys.
    Cache {
        /// What happened.
        event: crate::cache::CacheEvent,
    },
    /// The binary cache has every path of the deploy: the nodes substitute
    /// from it.
    CachePushed {
        /// What the push did.
        report: crate::cache::PushReport,
    },
    /// Pushing to the binary cache failed: the nodes get direct copies of
    /// what they still lack (the deploy goes on).
    CacheFailed {
        /// The cache's URL.
        cache: String,
        /// Why, with what to do next.
        error: String,
    },
    /// Work on a node began.
    NodeStarted {
        /// The node.
        name: String,
    },
    /// Where the node's missing paths come from (with fan-out).
    Source {
        /// The node.
        name: String,
        /// From where.
        source: crate::fanout::Source,
    },
    /// Copy progress of a node.
    Copy {
        /// The node.
        name: String,
        /// What happened.
        event: CopyEvent,
    },
    /// The node's profile now points to the new closure.
    Switched {
        /// The node.
        name: String,
    },
    /// Another deploy holds the node's lock; waiting for it.
    WaitingForLock {
        /// The node.
        name: String,
        /// Who holds it (as the holder described itself).
        holder: String,
    },
    /// A stage says what it is doing or waiting for.
    Stage {
        /// The node.
        name: String,
        /// The stage's name.
        stage: String,
        /// What it says.
        message: String,
    },
    /// The node has no Nix: installing it before the first transfer.
    InstallingNix {
        /// The node.
        name: String,
    },
    /// The deploy was confirmed over a fresh connection: the node keeps
    /// the new generation.
    Confirmed {
        /// The node.
        name: String,
    },
}
