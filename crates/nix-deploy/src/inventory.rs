//! The cluster inventory: the flake output `deploy` (`deploy.cluster` and
//! `deploy.nodes.<name>`, written with `nix/inventory.nix`), read with
//! `nix eval --json`, checked, and turned into typed settings; and building
//! the selected nodes' profiles in one `nix build`.
//!
//! Note: `nix eval FLAKE#deploy` would find `packages.<system>.deploy`
//! first (Nix tries the `packages` prefix before the bare name), so the
//! inventory is read as `deploy.cluster` and `deploy.nodes`.

use std::collections::{BTreeMap, BTreeSet};

use nix_wire::StorePath;
use serde::Deserialize;

use crate::install::InstallMethod;
use crate::nix_cli::{NixCli, NixError};

mod node;
pub mod validate;

/// What a node does in the k3s cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs `k3s server` (control plane).
    Server,
    /// Runs `k3s agent` (worker).
    Agent,
}

impl Role {
    /// The spellings the inventory accepts.
    pub const ALLOWED: &'static [&'static str] = &["server", "agent"];

    /// The inventory's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

/// Cluster-wide settings (`deploy.cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSettings {
    /// The cluster's name.
    pub name: String,
    /// Contact address for Let's Encrypt.
    pub acme_email: String,
    /// The ingress stack's chart versions.
    pub ingress: IngressSettings,
    /// k3s settings shared by all nodes.
    #[serde(default)]
    pub k3s: ClusterK3s,
    /// Workload manifests for the servers' auto-deploy directory: file
    /// name to the file holding it (a store path) or to its text (see
    /// [`validate::manifest`]).
    #[serde(default)]
    pub manifests: BTreeMap<String, String>,
    /// The binary cache the deploy pushes to and the nodes substitute
    /// from, if any.
    #[serde(default)]
    pub cache: Option<CacheSettings>,
}

/// A binary cache for the cluster (`deploy.cluster.cache`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheSettings {
    /// Where the deployer writes: `http://`, `https://` or `s3://…`.
    pub url: String,
    /// Where the nodes read (their `extra-substituters`).
    pub substituter: String,
    /// Keys of others who sign paths in the cache, trusted by the nodes
    /// besides the deployer's.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// How NARs are compressed there.
    pub compression: CacheCompression,
}

/// `deploy.cluster.cache.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheCompression {
    /// zstd (nodes with Nix 2.4 or later).
    Zstd,
    /// None (any Nix).
    None,
}

impl From<CacheCompression> for crate::cache::NarCompression {
    fn from(c: CacheCompression) -> Self {
        match c {
            CacheCompression::Zstd => Self::Zstd,
            CacheCompression::None => Self::None,
        }
    }
}

impl CacheSettings {
    /// URLs are one word each without credentials (they go into nix.conf,
    /// the Nix store and messages), keys parse.
    fn check(&self) -> Result<(), String> {
        for (field, url) in [("url", &self.url), ("substituter", &self.substituter)] {
            if url.is_empty() || url.chars().any(char::is_whitespace) {
                return Err(format!("{field} {url:?} must be a URL without spaces"));
            }
            validate::nix_setting("extra-substituters", url)
                .map_err(|e| format!("{field}: {e}"))?;
            let userinfo = url
                .split_once("://")
                .and_then(|(_, rest)| rest.split('/').next())
                .is_some_and(|authority| authority.contains('@'));
            if userinfo {
                return Err(format!(
                    "{field}: credentials don't belong in the inventory (it ends up in the Nix \
                     store): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                     NIX_DEPLOY_CACHE_TOKEN, in the deployer's environment"
                ));
            }
        }
        for key in &self.public_keys {
            nix_wire::signing::PublicKey::parse(key)
                .map_err(|e| format!("publicKeys: {key:?}: {e}"))?;
        }
        Ok(())
    }

    /// Adds the cache to a node's nix.conf settings: its substituter to
    /// `extra-substituters` and its keys to `extra-trusted-public-keys`,
    /// after what the node's own settings say.
    fn add_to(&self, settings: &mut BTreeMap<String, String>) {
        let mut append = |name: &str, words: &[String]| {
            let value = settings.entry(name.to_owned()).or_default();
            for word in words {
                if !value.split_whitespace().any(|w| w == word) {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(word);
                }
            }
        };
        append(
            "extra-substituters",
            std::slice::from_ref(&self.substituter),
        );
        if !self.public_keys.is_empty() {
            append("extra-trusted-public-keys", &self.public_keys);
        }
    }
}

/// Helm chart versions of the ingress stack (`deploy.cluster.ingress`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressSettings {
    /// Traefik chart version (traefik.github.io/charts), e.g. `25.0.0`.
    pub traefik_chart: String,
    /// cert-manager chart version (charts.jetstack.io), e.g. `v1.20.0`.
    pub cert_manager: String,
}

/// Cluster-wide k3s settings (`deploy.cluster.k3s`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClusterK3s {
    /// Whether several servers form an HA control plane (embedded etcd).
    #[serde(default)]
    pub ha: bool,
    /// The k3s version the nodes run, e.g. `1.35.6+k3s1`.
    #[serde(default)]
    pub version: Option<String>,
}

/// One node, checked (`deploy.nodes.<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's name in the inventory (and its host profile's name).
    pub name: String,
    /// Address or DNS name to reach it over SSH.
    pub hostname: String,
    /// The address the other nodes reach it at, for fan-out (`None`:
    /// `hostname`).
    pub peer_address: Option<String>,
    /// The SSH port the other nodes reach it at, for fan-out (`None`:
    /// `ssh_port`).
    pub peer_port: Option<u16>,
    /// SSH user (default `root`).
    pub ssh_user: String,
    /// SSH port (default 22).
    pub ssh_port: u16,
    /// Server or agent.
    pub role: Role,
    /// Nix system of the node, e.g. `x86_64-linux`.
    pub system: String,
    /// The profile's store path (as evaluated; it may not be built yet).
    pub profile: StorePath,
    /// The installable that builds the profile:
    /// `FLAKE#deploy.nodes.<name>.profile`.
    pub profile_installable: String,
    /// Where the profile lives on the node, e.g.
    /// `/nix/var/nix/profiles/nix-deploy`.
    pub profile_path: String,
    /// This node's k3s settings.
    pub k3s: NodeK3s,
    /// How Nix is installed on the node if it has none.
    pub nix: NodeNix,
}

/// How `deploy prepare` installs Nix on a node without it
/// (`deploy.nodes.<name>.nix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNix {
    /// The method (`install`, default `closure`).
    pub install: InstallMethod,
    /// The Nix package the `closure` method pushes (as evaluated; it may
    /// not be built yet), if the inventory gives one.
    pub package: Option<StorePath>,
    /// The installable that builds it: `FLAKE#deploy.nodes.<name>.nix.package`.
    pub package_installable: String,
    /// Settings for our block of the node's nix.conf.
    pub settings: BTreeMap<String, String>,
}

/// A node's k3s settings (`deploy.nodes.<name>.k3s`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeK3s {
    /// Extra flags for `k3s server` / `k3s agent` on this node.
    #[serde(default)]
    pub extra_flags: Vec<String>,
}

/// The whole inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// Cluster-wide settings.
    pub cluster: ClusterSettings,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeConfig>,
}

/// What is wrong with the inventory, or why it could not be read or built.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// Nix failed (evaluation or build); its message is kept.
    #[error(transparent)]
    Nix(#[from] NixError),
    /// A part of the output does not have the expected shape.
    #[error("deploy.{part}: {reason}")]
    Malformed {
        /// Which part, e.g. `cluster` or `nodes.k8s-cluster-main`.
        part: String,
        /// What serde or we found.
        reason: String,
    },
    /// A node's field is missing or wrong.
    #[error("node `{node}`: {field} {problem}")]
    Field {
        /// The node's name.
        node: String,
        /// The field, as spelled in the inventory (e.g. `hostname`).
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// There are no nodes at all.
    #[error("the inventory has no nodes: add entries to deploy.nodes")]
    NoNodes,
    /// No node runs the k3s server.
    #[error("no node has role = \"server\" (nodes: {nodes}): the cluster needs one")]
    NoServer {
        /// All node names, comma-separated.
        nodes: String,
    },
    /// Several servers, but the cluster is not set up for HA.
    #[error("nodes {servers} all have role = \"server\" but cluster.k3s.ha = false: make all but one an agent, or set cluster.k3s.ha = true")]
    SeveralServers {
        /// The servers' names, comma-separated.
        servers: String,
    },
    /// A selected name is not in the inventory.
    #[error("no node named `{name}` (known: {known})")]
    UnknownNode {
        /// The name asked for.
        name: String,
        /// The inventory's node names, comma-separated.
        known: String,
    },
    /// `nix build` did not report the profile we evaluated for a node.
    #[error("nix build did not produce {expected} for node `{node}` (did the flake change since it was evaluated?)")]
    MissingBuild {
        /// The node.
        node: String,
        /// The store path evaluation promised.
        expected: StorePath,
    },
}

impl Inventory {
    /// Evaluates `deploy.cluster` and `deploy.nodes` of `nix`'s flake and
    /// checks them.
    pub async fn load(nix: &NixCli) -> Result<Inventory, InventoryError> {
        let (cluster, nodes) = tokio::try_join!(
            nix.eval_json("deploy.cluster"),
            nix.eval_json("deploy.nodes")
        )?;
        Inventory::from_json(nix, cluster, nodes)
    }

    /// Checks the evaluated `deploy.cluster` and `deploy.nodes` values;
    /// `nix` names the flake for the profiles' installables.
    pub fn from_json(
        nix: &NixCli,
        cluster: serde_json::Value,
        nodes: serde_json::Value,
    ) -> Result<Inventory, InventoryError> {
        let malformed = |part: &str, reason: String| InventoryError::Malformed {
            part: part.to_string(),
            reason,
        };
        let cluster: ClusterSettings =
            serde_json::from_value(cluster).map_err(|e| malformed("cluster", e.to_string()))?;
        for (name, value) in &cluster.manifests {
            validate::manifest(name, value)
                .map_err(|reason| malformed(&format!("cluster.manifests.{name}"), reason))?;
        }
        if let Some(cache) = &cluster.cache {
            cache
                .check()
                .map_err(|reason| malformed("cluster.cache", reason))?;
        }
        let raw_nodes: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(nodes).map_err(|e| malformed("nodes", e.to_string()))?;
        let mut checked = BTreeMap::new();
        for (name, value) in raw_nodes {
            let mut node = node::check_node(nix, &name, &value)?;
            if let Some(cache) = &cluster.cache {
                cache.add_to(&mut node.nix.settings);
            }
            checked.insert(name, node);
        }
        let inventory = Inventory {
            cluster,
            nodes: checked,
        };
        inventory.check_roles()?;
        Ok(inventory)
    }

    /// One server, or several with `cluster.k3s.ha`; at least one node.
    fn check_roles(&self) -> Result<(), InventoryError> {
        if self.nodes.is_empty() {
            return Err(InventoryError::NoNodes);
        }
        let servers: Vec<&str> = self
            .nodes
            .values()
            .filter(|n| n.role == Role::Server)
            .map(|n| n.name.as_str())
            .collect();
        match servers.len() {
            0 => Err(InventoryError::NoServer {
                nodes: self.known_names(),
            }),
            1 => Ok(()),
            _ if self.cluster.k3s.ha => Ok(()),
            _ => Err(InventoryError::SeveralServers {
                servers: servers.join(", "),
            }),
        }
    }

    /// The nodes named in `names`, in that order without repeats; the single
    /// name `all` (or no names) selects every node.
    pub fn select(&self, names: &[String]) -> Result<Vec<&NodeConfig>, InventoryError> {
        if names.is_empty() || names.iter().any(|n| n == "all") {
            return Ok(self.nodes.values().collect());
        }
        let mut seen = BTreeSet::new();
        let mut selected = Vec::new();
        for name in names {
            let node = self
                .nodes
                .get(name)
                .ok_or_else(|| InventoryError::UnknownNode {
                    name: name.clone(),
                    known: self.known_names(),
                })?;
            if seen.insert(name.as_str()) {
                selected.push(node);
            }
        }
        Ok(selected)
    }

    /// Node names, comma-separated, for messages.
    fn known_names(&self) -> String {
        self.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Builds the profiles of `nodes` in one `nix build` and returns each node's
/// built profile.
pub async fn build_profiles(
    nix: &NixCli,
    nodes: &[&NodeConfig],
) -> Result<BTreeMap<String, StorePath>, InventoryError> {
    let mut installables: Vec<String> = Vec::new();
    for node in nodes {
        if !installables.contains(&node.profile_installable) {
            installables.push(node.profile_installable.clone());
        }
    }
    let results = nix.build(&installables).await?;
    let built: BTreeSet<&StorePath> = results.iter().flat_map(|r| r.outputs.values()).collect();
    nodes
        .iter()
        .map(|node| match built.contains(&node.profile) {
            true => Ok((node.name.clone(), node.profile.clone())),
            false => Err(InventoryError::MissingBuild {
                node: node.name.clone(),
                expected: node.profile.clone(),
            }),
        })
        .collect()
}

/// Builds the Nix package the `closure` method installs on `node`.
pub async fn build_nix_package(
    nix: &NixCli,
    node: &NodeConfig,
) -> Result<StorePath, InventoryError> {
    let expected = node.nix.package.clone().ok_or_else(|| InventoryError::Field {
        node: node.name.clone(),
        field: "nix.package",
        problem: "is not set: give mkDeploy `nixPackage = system: nixpkgs.legacyPackages.${system}.nix;` or set the node's nix.package".to_owned(),
    })?;
    let results = nix
        .build(std::slice::from_ref(&node.nix.package_installable))
        .await?;
    match results
        .iter()
        .flat_map(|r| r.outputs.values())
        .any(|p| *p == expected)
    {
        true => Ok(expected),
        false => Err(InventoryError::MissingBuild {
            node: node.name.clone(),
            expected,
        }),
    }
}
