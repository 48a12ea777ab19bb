//! What a cluster is made of: named nodes of three kinds.

use std::path::PathBuf;

/// The file (inside a template) that `scripts/setup-test-machine` writes last
/// when it makes the templates; its name carries the templates' version.
pub(crate) const TEMPLATE_STAMP: &str = "etc/nix-deploy-node-template-2";

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A Debian 13 VPS with Debian's Nix 2.26 and OpenSSH: the `node-trixie`
    /// template as the read-only lower layer of an overlay, entered with chroot.
    Trixie,
    /// A Debian 13 VPS with OpenSSH and no Nix (the `node-bare` template).
    Bare,
    /// This machine's own system and Nix 2.8 in a mount namespace with a
    /// private `/nix`, `/etc` and `/var` (overlays), `/root`, `/home`, `/run` and `/tmp`,
    /// served by this machine's sshd. Lighter; for where only the store matters.
    LocalNix,
}

impl NodeKind {
    /// The template this kind of node overlays, if any.
    pub(crate) fn template(self) -> Option<PathBuf> {
        let cache = std::env::var_os("NIX_DEPLOY_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/nix-deploy"));
        match self {
            NodeKind::Trixie => Some(cache.join("node-trixie")),
            NodeKind::Bare => Some(cache.join("node-bare")),
            NodeKind::LocalNix => None,
        }
    }

    /// The node's host key, as a path inside the node. A [`NodeKind::LocalNix`]
    /// node uses a name the host's own /etc/ssh does not hold.
    pub(crate) fn host_key(self) -> &'static str {
        match self {
            NodeKind::Trixie | NodeKind::Bare => "/etc/ssh/ssh_host_ed25519_key",
            NodeKind::LocalNix => "/etc/ssh/nd_host_ed25519_key",
        }
    }
}

/// One node of a [`ClusterSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node's name (also its hostname): `[a-z0-9-]`, at most 32 characters.
    pub name: String,
    /// What the node is.
    pub kind: NodeKind,
    /// Whether it boots with systemd as pid 1 (template kinds only; see
    /// [`ClusterSpec::systemd_node`]).
    pub systemd: bool,
}

/// The nodes of a cluster to start, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSpec {
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// Whether the template nodes reach the Debian mirror through an apt
    /// proxy on the host (see [`ClusterSpec::with_apt_mirror`]).
    pub apt_mirror: bool,
    /// Whether each node's files live in memory (see
    /// [`ClusterSpec::in_memory`]).
    pub in_memory: bool,
}

impl ClusterSpec {
    /// An empty cluster.
    pub fn new() -> ClusterSpec {
        ClusterSpec::default()
    }

    /// Adds a node named `name`.
    pub fn node(mut self, name: &str, kind: NodeKind) -> ClusterSpec {
        self.nodes.push(NodeSpec {
            name: name.to_owned(),
            kind,
            systemd: false,
        });
        self
    }

    /// Adds a node named `name` that boots with systemd as its pid 1
    /// (`systemd-nspawn --boot` in its network namespace): sshd runs as
    /// `ssh.service`, Nix's daemon (on [`NodeKind::Trixie`]) as
    /// `nix-daemon.socket`. Slower to start than the chroot kinds; for what
    /// needs a real systemd. Not for [`NodeKind::LocalNix`], and without
    /// [`Node::delay`](crate::Node::delay).
    pub fn systemd_node(mut self, name: &str, kind: NodeKind) -> ClusterSpec {
        self.nodes.push(NodeSpec {
            name: name.to_owned(),
            kind,
            systemd: true,
        });
        self
    }

    /// `count` nodes of `kind`, named `node0`, `node1`...
    pub fn uniform(kind: NodeKind, count: usize) -> ClusterSpec {
        (0..count).fold(ClusterSpec::new(), |s, i| s.node(&format!("node{i}"), kind))
    }

    /// Lets apt in the [`NodeKind::Trixie`] and [`NodeKind::Bare`] nodes
    /// reach the Debian mirror of their apt sources, through an HTTP proxy the
    /// cluster runs on the host's address of its network (port 3142 if free, see
    /// [`crate::Cluster::apt_proxy`]) and names in each node's
    /// `/etc/apt/apt.conf.d/00proxy`. Nothing else is reachable through it,
    /// and nothing is routed. [`NodeKind::LocalNix`] nodes see the host's
    /// dpkg database (under their own `/var` overlay), so they get no proxy.
    pub fn with_apt_mirror(mut self) -> ClusterSpec {
        self.apt_mirror = true;
        self
    }

    /// Keeps each node's files (its root's upper layer, its store) on a
    /// tmpfs of its own instead of the host's disk. For benchmarks: a disk
    /// that has just had a node's store deleted (every cold run does that)
    /// allocates inodes more slowly each time (ext4 avoids recently deleted
    /// ones), which no real node sees; in memory every run starts alike.
    pub fn in_memory(mut self) -> ClusterSpec {
        self.in_memory = true;
        self
    }

    /// Checks names: valid and unique.
    pub(crate) fn invalid_name(&self) -> Option<String> {
        self.nodes.iter().enumerate().find_map(|(i, n)| {
            let valid = !n.name.is_empty()
                && n.name.len() <= 32
                && n.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            let unique = !self.nodes[..i].iter().any(|m| m.name == n.name);
            (!valid || !unique).then(|| n.name.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_valid_and_unique() {
        assert_eq!(ClusterSpec::uniform(NodeKind::Bare, 3).invalid_name(), None);
        let dup = ClusterSpec::new()
            .node("a", NodeKind::Bare)
            .node("a", NodeKind::Trixie);
        assert_eq!(dup.invalid_name().as_deref(), Some("a"));
        for bad in ["", "A", "a b", "a/b", &"x".repeat(33)] {
            let spec = ClusterSpec::new().node(bad, NodeKind::Bare);
            assert_eq!(spec.invalid_name().as_deref(), Some(bad));
        }
    }
}
