//! A node's network: its namespace, a veth pair to the host namespace with a
//! private /30 subnet of 10.213.0.0/16, and optional shaping with `tc tbf`.

use std::net::Ipv4Addr;

use crate::cmd::{cmd, run};
use crate::error::Result;

/// A node's network namespace and its link to the host.
#[derive(Debug)]
pub(crate) struct Link {
    /// The namespace's name, `nd-<cluster>-<i>`.
    pub netns: String,
    /// The host end of the veth, `nd<cluster>h<i>`.
    pub host_if: String,
    /// The host's address on the link.
    pub host_ip: Ipv4Addr,
    /// The node's address (on its `eth0`).
    pub node_ip: Ipv4Addr,
}

/// The host and node addresses of /30 subnet number `slot`.
fn subnet(slot: u16) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + u32::from(slot) * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

impl Link {
    /// Makes node `index` of cluster `id`'s namespace and veth, on subnet `slot`.
    pub(crate) fn create(id: &str, index: usize, slot: u16) -> Result<Link> {
        let (host_ip, node_ip) = subnet(slot);
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
        ip(&[
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &link.host_if,
        ])?;
        ip(&["link", "set", &link.host_if, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{node_ip}/30"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(link)
    }

    /// Limits the link to `rate_mbit` Mbit/s in both directions with a token
    /// bucket filter (`tc qdisc replace ... root tbf`), or lifts the limit if `None`.
    pub(crate) fn shape(&self, rate_mbit: Option<u32>) -> Result<()> {
        let ends = [
            (None, self.host_if.as_str()),
            (Some(self.netns.as_str()), "eth0"),
        ];
        for (ns, dev) in ends {
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
                    run(&mut tc)?;
                }
                None => {
                    tc.args(["qdisc", "del", "dev", dev, "root"]);
                    // Deleting the default qdisc fails; there was nothing to lift then.
                    let _ = run(&mut tc);
                }
            }
        }
        Ok(())
    }

    /// Deletes the namespace (which deletes the veth pair with it).
    pub(crate) fn delete(&self) {
        let _ = run(&mut cmd("ip", ["netns", "delete", &self.netns]));
        let _ = run(&mut cmd("ip", ["link", "delete", &self.host_if]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_do_not_overlap() {
        assert_eq!(
            subnet(0),
            (Ipv4Addr::new(10, 213, 0, 1), Ipv4Addr::new(10, 213, 0, 2))
        );
        assert_eq!(
            subnet(64),
            (Ipv4Addr::new(10, 213, 1, 1), Ipv4Addr::new(10, 213, 1, 2))
        );
        assert_eq!(subnet(16383).1, Ipv4Addr::new(10, 213, 255, 254));
    }
}
