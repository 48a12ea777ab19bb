//! ConfigureVPS inside a deploy: a node whose Nix daemon can't be started
//! is inspected, and if it has no Nix, Nix is installed the way its
//! inventory says ([`NixSource`]) before the first transfer. Nodes that
//! have Nix pay nothing for this: it only runs when opening the node's
//! store failed.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use deploy_ssh::SshSession;

use super::{DeployEvent, DeployOptions, NodeError, NodePlan};
use crate::install::NixInstall;
use crate::prepare::{inspect, prepare};
use crate::stage::StageError;

/// What [`NixSource::nix_install`] returns.
pub type NixInstallFuture<'a> =
    Pin<Box<dyn Future<Output = Result<NixInstall, StageError>> + Send + 'a>>;

/// Says how to install Nix on a node that has none (e.g. by building the
/// inventory's Nix package for the `closure` method); asked only for such
/// nodes.
pub trait NixSource: std::fmt::Debug + Send + Sync {
    /// How to install Nix on `node`.
    fn nix_install<'a>(&'a self, node: &'a str) -> NixInstallFuture<'a>;

    /// The settings for our block of `node`'s nix.conf once it has Nix.
    fn settings(&self, _node: &str) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

/// After opening the node's store failed with `error`: installs Nix if the
/// node has none and a source says how (then open the store again), else
/// gives `error` back.
pub(super) async fn install_if_missing(
    plan: &NodePlan,
    opts: &DeployOptions,
    session: &SshSession,
    error: NodeError,
    send: &(dyn Fn(DeployEvent) + Send + Sync),
) -> Result<(), NodeError> {
    let Some(source) = &opts.install_nix else {
        return Err(error);
    };
    match inspect(session).await {
        Ok(facts) if facts.nix_version.is_none() => {}
        _ => return Err(error),
    }
    send(DeployEvent::InstallingNix {
        name: plan.name.clone(),
    });
    let how = source
        .nix_install(&plan.name)
        .await
        .map_err(|source| NodeError::NixSource {
            node: plan.name.clone(),
            source,
        })?;
    prepare(session, None, Some(&how), &source.settings(&plan.name)).await?;
    Ok(())
}
