//! [`NodePlan`]: what to deploy where, the one description of a node that
//! the deploy and its stages share.

use deploy_ssh::Target;
use nix_wire::StorePath;

/// What to deploy where.
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// The node's name in the inventory.
    pub name: String,
    /// How to reach it.
    pub target: Target,
    /// Where its profile lives on the node.
    pub profile_path: String,
    /// The built profile (in the local store).
    pub profile: StorePath,
    /// The address the other nodes reach it at, for fan-out (`None`: the
    /// address the deployer reached it at).
    pub peer_address: Option<String>,
    /// The SSH port the other nodes reach it at, for fan-out (`None`: the
    /// port the deployer reached it at).
    pub peer_port: Option<u16>,
}
