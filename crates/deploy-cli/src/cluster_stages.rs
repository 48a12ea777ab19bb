//! The cluster stages of `deploy all` (k3s, then the ingress stack), built
//! from the inventory, and what `--dry-run` shows of them.

use std::sync::Arc;
use std::time::Duration;

use deploy_cluster::ingress::stage::IngressStage;
use deploy_cluster::ingress::{self, IngressError, IngressWarning, KubeVersion, Manifest};
use deploy_cluster::k3s::plan::K3sNode;
use deploy_cluster::k3s::{K3sStage, K3sTimeouts};
use nix_deploy::inventory::validate::{self, ManifestSource};
use nix_deploy::inventory::Role;
use nix_deploy::stage::Stage;

use crate::inventory_args::Resolved;

/// The k3s stage for the resolved cluster.
pub fn k3s_stage(
    resolved: &Resolved,
    ssh: deploy_ssh::SshOptions,
    timeout: Duration,
) -> Arc<K3sStage> {
    let nodes = resolved
        .nodes
        .iter()
        .map(|(node, target)| {
            let mut addresses = vec![node.hostname.clone()];
            if target.host != node.hostname {
                addresses.push(target.host.clone());
            }
            let k3s = K3sNode {
                name: node.name.clone(),
                role: node.role,
                addresses,
                profile_path: node.profile_path.clone(),
                extra_flags: node.k3s.extra_flags.clone(),
            };
            (k3s, target.clone())
        })
        .collect();
    let timeouts = K3sTimeouts {
        api: timeout,
        ready: timeout,
        ..K3sTimeouts::default()
    };
    Arc::new(K3sStage::new(
        nodes,
        resolved.cluster.k3s.ha,
        &resolved.selected,
        ssh,
        timeouts,
    ))
}

/// Why the ingress stack could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ClusterStageError {
    /// The inventory does not say which k3s the nodes run.
    #[error("deploy.cluster.k3s.version is not set: set it to the nodes' k3s version (the flake sets it to its nixpkgs' k3s.version)")]
    NoK3sVersion,
    /// A workload manifest could not be read.
    #[error("deploy.cluster.manifests.{name}: can't read {path}: {source}")]
    Manifest {
        /// Its file name.
        name: String,
        /// Where it should be.
        path: String,
        /// Why not.
        source: std::io::Error,
    },
    /// The stack does not render.
    #[error(transparent)]
    Ingress(#[from] IngressError),
}

/// The ingress stage for the resolved cluster (every server gets the
/// stack), and what the operator should hear about it.
pub fn ingress_stage(
    resolved: &Resolved,
) -> Result<(Arc<IngressStage>, Vec<IngressWarning>), ClusterStageError> {
    let cluster = &resolved.cluster;
    let version = cluster
        .k3s
        .version
        .as_deref()
        .ok_or(ClusterStageError::NoK3sVersion)?;
    let kubernetes = KubeVersion::parse(version)?;
    let workloads =
        cluster
            .manifests
            .iter()
            .map(|(name, value)| {
                // The inventory was validated: a store file or the text itself.
                let content =
                    match validate::manifest(name, value) {
                        Ok(ManifestSource::StoreFile(path)) => std::fs::read_to_string(&path)
                            .map_err(|source| ClusterStageError::Manifest {
                                name: name.clone(),
                                path,
                                source,
                            })?,
                        Ok(ManifestSource::Text(text)) => text,
                        Err(why) => {
                            return Err(ClusterStageError::Manifest {
                                name: name.clone(),
                                path: value.clone(),
                                source: std::io::Error::other(why),
                            })
                        }
                    };
                Ok(Manifest {
                    file_name: name.clone(),
                    content,
                })
            })
            .collect::<Result<Vec<_>, ClusterStageError>>()?;
    let stack = ingress::render(cluster, kubernetes, &workloads)?;
    let warnings = stack.warnings.clone();
    let servers = resolved
        .nodes
        .iter()
        .filter(|(n, _)| n.role == Role::Server)
        .map(|(n, _)| n.name.clone());
    Ok((Arc::new(IngressStage::new(stack, servers)), warnings))
}

/// The cluster stages, in the order they run on a node.
#[derive(Debug, Clone)]
pub struct ClusterStages {
    /// k3s itself.
    pub k3s: Arc<K3sStage>,
    /// The ingress stack, on the servers.
    pub ingress: Arc<IngressStage>,
}

impl ClusterStages {
    /// As the deploy runs them.
    pub fn stages(&self) -> Vec<Arc<dyn Stage>> {
        vec![self.k3s.clone(), self.ingress.clone()]
    }

    /// The dry run's text for one node: every command and file of the
    /// stages.
    pub fn describe(&self, node: &str) -> Vec<String> {
        let k3s = self
            .k3s
            .describe(node)
            .into_iter()
            .map(|a| format!("k3s: {a}"));
        let ingress = self
            .ingress
            .describe(node)
            .into_iter()
            .map(|a| format!("ingress: {a}"));
        k3s.chain(ingress).collect()
    }
}
