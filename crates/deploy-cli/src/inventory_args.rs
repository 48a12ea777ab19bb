//! The flags that find nodes in the flake's inventory, shared by `deploy`,
//! `deploy generations` and `deploy rollback`: the flake, Nix's
//! `--override-input`/`--option`, `--target` overrides and the SSH flags.

use std::collections::BTreeMap;

use clap::Args;
use deploy_ssh::Target;
use nix_deploy::inventory::{validate, ClusterSettings, Inventory, InventoryError, NodeConfig};
use nix_deploy::nix_cli::NixCli;

use crate::ssh_args::SshArgs;

/// Where the inventory is and how to reach its nodes.
#[derive(Args, Debug)]
pub struct InventoryArgs {
    /// The flake holding the inventory (`deploy.nodes`).
    #[arg(long, default_value = ".", value_name = "REF")]
    pub flake: String,
    /// Deploy a node's profile to another address (e.g. a replacement machine).
    #[arg(long = "target", value_name = "NODE=[USER@]HOST[:PORT]")]
    pub targets: Vec<String>,
    /// Passed to nix: override a flake input.
    #[arg(long, num_args = 2, value_names = ["INPUT", "REF"])]
    pub override_input: Vec<String>,
    /// Passed to nix: set a Nix option.
    #[arg(long = "option", num_args = 2, value_names = ["NAME", "VALUE"])]
    pub nix_options: Vec<String>,
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// Why the inventory's nodes could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The inventory could not be read, validated or built.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// A `--target` is malformed or names an unknown node.
    #[error("--target {0}")]
    Target(String),
}

impl InventoryArgs {
    /// The `nix` runner with the flake and the extra flags.
    pub fn nix(&self) -> NixCli {
        let mut extra = Vec::new();
        for pair in self.override_input.chunks(2) {
            extra.push("--override-input".to_owned());
            extra.extend(pair.iter().cloned());
        }
        for pair in self.nix_options.chunks(2) {
            extra.push("--option".to_owned());
            extra.extend(pair.iter().cloned());
        }
        NixCli::new(self.flake.clone()).with_args(extra)
    }

    /// The `--target` overrides, checked against the inventory.
    fn target_overrides(
        &self,
        inventory: &Inventory,
    ) -> Result<BTreeMap<String, Target>, ResolveError> {
        self.targets
            .iter()
            .map(|t| {
                let (node, addr) = t.split_once('=').ok_or_else(|| {
                    ResolveError::Target(format!("{t:?}: expected NODE=[USER@]HOST[:PORT]"))
                })?;
                if !inventory.nodes.contains_key(node) {
                    return Err(ResolveError::Target(format!(
                        "{t:?}: no node {node:?} in the inventory"
                    )));
                }
                let target =
                    Target::parse(addr).map_err(|e| ResolveError::Target(format!("{t:?}: {e}")))?;
                validate::hostname(&target.host)
                    .map_err(|e| ResolveError::Target(format!("{t:?}: {e}")))?;
                Ok((node.to_owned(), target))
            })
            .collect()
    }

    /// Loads the inventory and returns the selected nodes (`all` or
    /// names) with the address to reach each.
    pub async fn resolve(
        &self,
        names: &[String],
    ) -> Result<Vec<(NodeConfig, Target)>, ResolveError> {
        Ok(self
            .resolve_cluster(names)
            .await?
            .selected()
            .cloned()
            .collect())
    }

    /// The whole inventory with every node's target, and which `names`
    /// select.
    pub async fn resolve_cluster(&self, names: &[String]) -> Result<Resolved, ResolveError> {
        let inventory = Inventory::load(&self.nix()).await?;
        let overrides = self.target_overrides(&inventory)?;
        let selected = inventory
            .select(names)?
            .into_iter()
            .map(|n| n.name.clone())
            .collect();
        let nodes = inventory
            .nodes
            .values()
            .map(|node| {
                let target = overrides
                    .get(&node.name)
                    .cloned()
                    .unwrap_or_else(|| Target {
                        user: Some(node.ssh_user.clone()),
                        host: node.hostname.clone(),
                        port: Some(node.ssh_port),
                    });
                (node.clone(), target)
            })
            .collect();
        Ok(Resolved {
            cluster: inventory.cluster,
            nodes,
            selected,
        })
    }
}

/// The inventory with each node's target.
#[derive(Debug)]
pub struct Resolved {
    /// Cluster-wide settings.
    pub cluster: ClusterSettings,
    /// Every node, with its target.
    pub nodes: Vec<(NodeConfig, Target)>,
    /// The names selected, in the order asked for.
    pub selected: Vec<String>,
}

impl Resolved {
    /// The selected nodes.
    pub fn selected(&self) -> impl Iterator<Item = &(NodeConfig, Target)> {
        self.selected
            .iter()
            .filter_map(|name| self.nodes.iter().find(|(n, _)| &n.name == name))
    }
}
