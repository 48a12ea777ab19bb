//! The network of a cluster: a bridge `nd<id>b` in the host namespace holding
//! the host's address 10.213.S.1 of the cluster's /24 (S its address slot), and
//! per node a network namespace joined to the bridge by a veth pair, the node
//! at 10.213.S.(i+2) on its `eth0`. The host and the nodes reach each other
//! directly; nothing is routed. Links can be shaped with `tc tbf`.

use std::net::Ipv4Addr;

use crate::cmd::{cmd, run};
use crate::error::{ClusterError, Result};

/// A node's network namespace and its link to the host.
#[derive(Debug)]
pub(crate) struct Link {
    /// The namespace's name, `nd-<cluster>-<i>`.
    pub netns: String,
    /// The host end of the veth, `nd<cluster>h<i>`, a port of the cluster's bridge.
    pub host_if: String,
    /// The host's address on the cluster's bridge.
    pub host_ip: Ipv4Addr,
    /// The node's address (on its `eth0`).
    pub node_ip: Ipv4Addr,
}

/// How many nodes a cluster's /24 holds.
pub(crate) const MAX_NODES: usize = 252;

/// The link index of the deployer's own namespace (address `.254`).
pub(crate) const DEPLOYER: u8 = 252;

/// Address `host` of /24 number `slot` in 10.213.0.0/16.
fn address(slot: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 213, slot, host)
}

/// The bridge of cluster `id`.
fn bridge(id: &str) -> String {
    format!("nd{id}b")
}

/// Makes cluster `id`'s bridge, holding the host's address on /24 number `slot`.
pub(crate) fn create_bridge(id: &str, slot: u8) -> Result<()> {
    let br = bridge(id);
    let ip = |args: &[&str]| run(&mut cmd("ip", args));
    ip(&["link", "add", &br, "type", "bridge"])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", address(slot, 1)),
        "dev",
        &br,
    ])?;
    ip(&["link", "set", &br, "up"])?;
    Ok(())
}

/// Limits what the host sends on cluster `id`'s bridge (the deployer's
/// uplink: frames the bridge forwards between nodes never pass the
/// bridge device's own queue) to `rate_mbit`, or lifts the limit.
pub(crate) fn shape_bridge(id: &str, rate_mbit: Option<u32>) -> Result<()> {
    shape_device(None, &bridge(id), rate_mbit)
}

/// Bytes the host sent into cluster `id`'s bridge so far (to its nodes,
/// not counting what they send each other).
pub(crate) fn bridge_sent_bytes(id: &str) -> Result<u64> {
    counter(&bridge(id), "tx_bytes")
}

/// A statistic of a network device of the host's namespace.
pub(crate) fn counter(dev: &str, name: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{dev}/statistics/{name}");
    let text = std::fs::read_to_string(&path).map_err(|source| ClusterError::Io {
        what: format!("reading {path}"),
        source,
    })?;
    text.trim().parse().map_err(|e| ClusterError::Io {
        what: format!("reading {path}"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// A token bucket filter of `rate_mbit` on `dev`'s egress (in namespace
/// `ns`), or none.
fn shape_device(ns: Option<&str>, dev: &str, rate_mbit: Option<u32>) -> Result<()> {
    let mut tc = cmd("tc", Vec::<String>::new());
    if let Some(ns) = ns {
        tc.args(["-n", ns]);
    }
    match rate_mbit {
        Some(rate) => {
            // A burst of 10 ms at that rate, at least 32 KiB.
            let burst = (u64::from(rate) * 1_250).max(32 * 1024);
            tc.args(["qdisc", "replace", "dev", dev, "root", "tbf"]);
            tc.args(["rate", &format!("{rate}mbit"), "burst", &burst.to_string()]);
            tc.args(["latency", "50ms"]);
            run(&mut tc).map(drop)
        }
        None => {
            tc.args(["qdisc", "del", "dev", dev, "root"]);
            // Deleting the default qdisc fails; there was nothing to lift then.
            let _ = run(&mut tc);
            Ok(())
        }
    }
}

impl Link {
    /// Makes the namespace and veth of node `index` (below [`MAX_NODES`]) of
    /// cluster `id`, whose /24 is number `slot`.
    pub(crate) fn create(id: &str, index: u8, slot: u8) -> Result<Link> {
        let (host_ip, node_ip) = (address(slot, 1), address(slot, index + 2));
        let link = Link {
            netns: format!("nd-{id}-{index}"),
            host_if: format!("nd{id}h{index}"),
            host_ip,
            node_ip,
        };
        let peer = format!("nd{id}p{index}");
        let ns = link.netns.as_str();
        let ip = |args: &[&str]| run(&mut cmd("ip", args));
        ip(&["netns", "add", ns])?;
        ip(&[
            "link",
            "add",
            &link.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            ns,
        ])?;
        ip(&["-n", ns, "link", "set", &peer, "name", "eth0"])?;
        ip(&["link", "set", &link.host_if, "master", &bridge(id), "up"])?;
        let node_cidr = format!("{node_ip}/24");
        ip(&["-n", ns, "addr", "add", &node_cidr, "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(link)
    }

    /// Takes the host end of the link down (`cut`) or up again: packets
    /// are lost, connections stay open on both ends, as when a route
    /// fails.
    pub(crate) fn set_up(&self, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        run(&mut cmd(
            "ip",
            ["link", "set", "dev", self.host_if.as_str(), state],
        ))
        .map(drop)
    }

    /// Limits the link to `rate_mbit` Mbit/s in both directions with a token
    /// bucket filter (`tc qdisc replace ... root tbf`), or lifts the limit if `None`.
    pub(crate) fn shape(&self, rate_mbit: Option<u32>) -> Result<()> {
        let ends = [
            (None, self.host_if.as_str()),
            (Some(self.netns.as_str()), "eth0"),
        ];
        for (ns, dev) in ends {
            shape_device(ns, dev, rate_mbit)?;
        }
        Ok(())
    }

    /// Deletes the namespace (which deletes the veth pair with it).
    pub(crate) fn delete(&self) {
        let _ = run(&mut cmd("ip", ["netns", "delete", &self.netns]));
        let _ = run(&mut cmd("ip", ["link", "delete", &self.host_if]));
    }
}
