//! Stages that run on a node after its profile switch and before the
//! deploy is confirmed (issue 6's k3s and ingress set-up plug in here). A
//! failing stage rolls the node back to its previous generation.

use std::future::Future;
use std::pin::Pin;

use deploy_ssh::SshSession;

use crate::deploy::NodePlan;

/// Why a stage failed, in the stage's own words.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// What [`Stage::run`] returns.
pub type StageFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StageError>> + Send + 'a>>;

/// A step of the deploy after the switch, on the node's SSH session.
pub trait Stage: std::fmt::Debug + Send + Sync {
    /// Its name, for events and errors.
    fn name(&self) -> &str;
    /// Runs it on one node.
    fn run<'a>(&'a self, node: &'a NodePlan, session: &'a SshSession) -> StageFuture<'a>;
}
