//! Stages that run on a node after its profile switch and before the
//! deploy is confirmed (the k3s and ingress set-up plug in here). A
//! failing stage rolls the node back to its previous generation.

use std::future::Future;
use std::pin::Pin;

use deploy_ssh::SshSession;

use crate::node_plan::NodePlan;

/// Why a stage failed, in the stage's own words.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// What [`Stage::run`] returns.
pub type StageFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StageError>> + Send + 'a>>;

/// What a stage gets to work with on one node.
#[derive(Clone, Copy)]
pub struct StageContext<'a> {
    /// The node's plan.
    pub node: &'a NodePlan,
    /// Its SSH session.
    pub session: &'a SshSession,
    /// Tells the user what the stage is doing or waiting for (it becomes a
    /// [`DeployEvent::Stage`](crate::deploy::DeployEvent::Stage)).
    pub progress: &'a (dyn Fn(String) + Send + Sync),
}

/// A step of the deploy after the switch, on the node's SSH session.
pub trait Stage: std::fmt::Debug + Send + Sync {
    /// Its name, for events and errors.
    fn name(&self) -> &str;
    /// Runs it on one node.
    fn run<'a>(&'a self, cx: StageContext<'a>) -> StageFuture<'a>;
    /// Told when a node's deploy has ended, whether or not this stage ran
    /// there (stages that coordinate nodes use it to stop waiting for a
    /// node that failed earlier).
    fn node_finished(&self, _node: &str, _success: bool) {}
}

/// One thing a stage does on a node, for `--dry-run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Runs a command.
    Run {
        /// The shell command.
        command: String,
        /// When it runs, if not always.
        when: Option<String>,
    },
    /// Writes a file.
    Write {
        /// Its path.
        path: String,
        /// Its mode.
        mode: u32,
        /// Its content, secrets masked.
        content: String,
    },
    /// Waits for something.
    Wait {
        /// What it waits for.
        what: String,
        /// How long at most, in seconds.
        timeout_secs: u64,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Run { command, when } => {
                write!(f, "run: {command}")?;
                if let Some(w) = when {
                    write!(f, "\n  (only {w})")?;
                }
                Ok(())
            }
            Action::Write {
                path,
                mode,
                content,
            } => {
                write!(f, "write {path} (mode {mode:04o}):")?;
                for line in content.lines() {
                    write!(f, "\n  | {line}")?;
                }
                Ok(())
            }
            Action::Wait { what, timeout_secs } => {
                write!(f, "wait (up to {timeout_secs} s): {what}")
            }
        }
    }
}
