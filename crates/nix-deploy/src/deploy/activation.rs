//! One node's activation inside a deploy, once its closure is copied:
//! take the node's lock; arm the safe-rollback watchdog (when asked for
//! and the profile has a generation to go back to); switch the profile;
//! install the login shells' PATH; run the stages; confirm over a fresh
//! SSH connection, or roll back at once if anything after arming failed.

use deploy_ssh::SshSession;

use super::{DeployEvent, DeployOptions, Goal, NodeError, NodePlan, NodeStatus};
use crate::activate::watchdog::Watchdog;
use crate::activate::{generations, lock, path, ActivationError};
use crate::profile;
use crate::stage::StageContext;

/// Activates `plan` on its node over `session`.
pub(super) async fn activate(
    plan: &NodePlan,
    opts: &DeployOptions,
    session: &SshSession,
    send: &(dyn Fn(DeployEvent) + Send + Sync),
) -> Result<NodeStatus, NodeError> {
    let lock = lock::acquire(session, opts.lock_timeout, |holder| {
        send(DeployEvent::WaitingForLock {
            name: plan.name.clone(),
            holder: holder.to_owned(),
        })
    })
    .await?;
    let result = locked(plan, opts, session, lock.inherited(), send).await;
    lock.release().await;
    result
}

/// The switch and what follows it, under the node's lock. `inherited` is
/// the generation that the watchdogs of dead deployers, superseded by
/// taking the lock, would have gone back to: ours goes back there too,
/// rather than to their unconfirmed generation.
async fn locked(
    plan: &NodePlan,
    opts: &DeployOptions,
    session: &SshSession,
    inherited: Option<u64>,
    send: &(dyn Fn(DeployEvent) + Send + Sync),
) -> Result<NodeStatus, NodeError> {
    let profile_path = &plan.profile_path;
    let gens = generations::list(session, profile_path).await?;
    let inherited = inherited.filter(|n| gens.iter().any(|g| g.number == *n));
    let previous = inherited.or(gens.iter().find(|g| g.current).map(|g| g.number));
    let dog = match (opts.rollback, previous) {
        (Some(timeout), Some(previous)) => {
            Some(Watchdog::arm(session, profile_path, previous, timeout).await?)
        }
        _ => None,
    };
    let after = async {
        profile::switch(session, profile_path, &plan.profile).await?;
        if let Some(dog) = &dog {
            dog.record_switch(session).await?;
        }
        send(DeployEvent::Switched {
            name: plan.name.clone(),
        });
        path::install(session, profile_path).await?;
        if opts.goal >= Goal::All {
            for stage in &opts.stages {
                let progress = |message: String| {
                    send(DeployEvent::Stage {
                        name: plan.name.clone(),
                        stage: stage.name().to_owned(),
                        message,
                    })
                };
                let cx = StageContext {
                    node: plan,
                    session,
                    progress: &progress,
                };
                stage.run(cx).await.map_err(|source| NodeError::Stage {
                    stage: stage.name().to_owned(),
                    source,
                })?;
            }
        }
        Ok::<(), NodeError>(())
    }
    .await;
    let Some(dog) = dog else {
        return after.map(|()| NodeStatus::Done);
    };
    if let Err(reason) = after {
        return match dog.roll_back_now(session).await {
            Ok(generation) => Ok(NodeStatus::RolledBack { reason, generation }),
            Err(e) => {
                tracing::warn!(node = %plan.name, error = %e, "immediate rollback failed");
                Ok(NodeStatus::RolledBack {
                    reason: NodeError::NotConfirmed(Box::new(reason)),
                    generation: dog.previous(),
                })
            }
        };
    }
    confirm(plan, opts, &dog, send).await
}

/// Confirms over a fresh connection, proving the node is still reachable.
async fn confirm(
    plan: &NodePlan,
    opts: &DeployOptions,
    dog: &Watchdog,
    send: &(dyn Fn(DeployEvent) + Send + Sync),
) -> Result<NodeStatus, NodeError> {
    let not_confirmed = |e: NodeError| NodeStatus::RolledBack {
        reason: NodeError::NotConfirmed(Box::new(e)),
        generation: dog.previous(),
    };
    let fresh = match SshSession::connect(&plan.target, &opts.ssh).await {
        Ok(s) => s,
        Err(e) => return Ok(not_confirmed(e.into())),
    };
    let result = dog.confirm(&fresh).await;
    if let Err(e) = fresh.close().await {
        tracing::debug!(error = %e, "closing the confirmation connection");
    }
    Ok(match result {
        Ok(()) => {
            send(DeployEvent::Confirmed {
                name: plan.name.clone(),
            });
            NodeStatus::Done
        }
        Err(e @ ActivationError::TooLate { generation, .. }) => NodeStatus::RolledBack {
            reason: e.into(),
            generation,
        },
        Err(e @ ActivationError::Superseded { .. }) => NodeStatus::Failed(e.into()),
        Err(e) => not_confirmed(e.into()),
    })
}
