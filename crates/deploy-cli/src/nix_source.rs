//! Which Nix a node without one gets, for `deploy prepare` and for `deploy`
//! (which installs it before the first transfer): the node's inventory
//! method or `--nix-install`, and for the `closure` method the inventory's
//! Nix package, built once per installable.

use std::collections::BTreeMap;

use nix_deploy::deploy::{NixInstallFuture, NixSource};
use nix_deploy::install::{InstallMethod, NixInstall};
use nix_deploy::inventory::{build_nix_package, InventoryError, NodeConfig};
use nix_deploy::nix_cli::NixCli;
use nix_wire::StorePath;
use tokio::sync::Mutex;

/// The inventory's answer to "how do I install Nix on this node".
#[derive(Debug)]
pub struct InventoryNix {
    nix: NixCli,
    nodes: BTreeMap<String, NodeConfig>,
    method: Option<InstallMethod>,
    built: Mutex<BTreeMap<String, StorePath>>,
}

impl InventoryNix {
    /// For `nodes`, building with `nix`; `method` overrides the inventory's.
    pub fn new(
        nix: NixCli,
        nodes: impl IntoIterator<Item = NodeConfig>,
        method: Option<InstallMethod>,
    ) -> Self {
        InventoryNix {
            nix,
            nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
            method,
            built: Mutex::default(),
        }
    }

    /// How to install Nix on `node`, building its package if needed.
    pub async fn for_node(&self, node: &NodeConfig) -> Result<NixInstall, InventoryError> {
        Ok(match self.method.unwrap_or(node.nix.install) {
            InstallMethod::Apt => NixInstall::Apt,
            InstallMethod::Closure => {
                let mut built = self.built.lock().await;
                let installable = &node.nix.package_installable;
                let package = match built.get(installable) {
                    Some(p) => p.clone(),
                    None => {
                        let p = build_nix_package(&self.nix, node).await?;
                        built.insert(installable.clone(), p.clone());
                        p
                    }
                };
                NixInstall::Closure { package }
            }
        })
    }
}

impl NixSource for InventoryNix {
    fn nix_install<'a>(&'a self, node: &'a str) -> NixInstallFuture<'a> {
        Box::pin(async move {
            let config = self
                .nodes
                .get(node)
                .ok_or_else(|| format!("no node {node} in the inventory"))?;
            Ok(self.for_node(config).await?)
        })
    }

    fn settings(&self, node: &str) -> BTreeMap<String, String> {
        self.nodes
            .get(node)
            .map(|n| n.nix.settings.clone())
            .unwrap_or_default()
    }
}
