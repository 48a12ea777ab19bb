//! A set of nodes started together, with one client key, one known_hosts file
//! and one OpenSSH config file, torn down together on drop.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;

use crate::apt_proxy::{self, AptProxy};
use crate::cmd::{cmd, run};
use crate::error::{io, ClusterError, Result};
use crate::net;
use crate::node::delay::DelayRelay;
use crate::node::{Node, Start};
use crate::spec::{ClusterSpec, NodeKind, TEMPLATE_STAMP};
use crate::state::{self, Lock};

/// Running nodes. Dropping the cluster tears everything down: processes,
/// namespaces, veths, files and its records; if the owning process dies
/// instead, the next [`Cluster::start`] (or [`crate::reap_stale`]) does it.
#[derive(Debug)]
pub struct Cluster {
    id: String,
    dir: PathBuf,
    client_key: PathBuf,
    known_hosts: PathBuf,
    ssh_config: PathBuf,
    nodes: Vec<Node>,
    apt_proxy: Option<AptProxy>,
    /// The cluster's /24 (number in 10.213.0.0/16).
    slot: u8,
    /// The deployer's own namespace, once asked for.
    deployer: std::sync::Mutex<Option<net::Link>>,
    /// The delaying relays in it ([`Cluster::delay_deployer`]).
    deployer_delays: std::sync::Mutex<Vec<DelayRelay>>,
}

impl Cluster {
    /// Reaps stale clusters, then starts the nodes of `spec` (in parallel).
    /// Needs root and, for template kinds, `scripts/setup-test-machine`'s templates.
    pub fn start(spec: &ClusterSpec) -> Result<Cluster> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(ClusterError::NotRoot);
        }
        if spec.nodes.len() > net::MAX_NODES {
            return Err(ClusterError::Node {
                node: format!("#{}", spec.nodes.len()),
                detail: format!("a cluster has at most {} nodes", net::MAX_NODES),
            });
        }
        if let Some(name) = spec.invalid_name() {
            return Err(ClusterError::Node {
                node: name,
                detail: "invalid or duplicate name (use [a-z0-9-], at most 32 characters)".into(),
            });
        }
        for template in spec.nodes.iter().filter_map(|n| n.kind.template()) {
            if !template.join(TEMPLATE_STAMP).exists() {
                return Err(ClusterError::TemplateMissing(template));
            }
        }
        let id = {
            let lock = Lock::take()?;
            state::reap_stale_locked(&lock)?;
            state::reserve_id(&lock)?
        };
        let dir = state::data_dir(&id);
        let mut cluster = Cluster {
            client_key: dir.join("client_key"),
            known_hosts: dir.join("known_hosts"),
            ssh_config: dir.join("ssh_config"),
            dir,
            id,
            nodes: Vec::new(),
            apt_proxy: None,
            slot: 0,
            deployer: std::sync::Mutex::new(None),
            deployer_delays: std::sync::Mutex::new(Vec::new()),
        };
        fs::create_dir_all(&cluster.dir)
            .map_err(io(format!("creating {}", cluster.dir.display())))?;
        let key = cluster.client_key.to_string_lossy().into_owned();
        let comment = format!("nd-{}", cluster.id);
        run(&mut cmd(
            "ssh-keygen",
            ["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f", &key],
        ))?;
        let public_path = cluster.client_key.with_extension("pub");
        let public = fs::read_to_string(&public_path)
            .map_err(io(format!("reading {}", public_path.display())))?;
        let slot = state::reserve_slot(&cluster.id)?;
        cluster.slot = slot;
        net::create_bridge(&cluster.id, slot)?;
        let started: Vec<Result<Node>> = thread::scope(|scope| {
            let handles: Vec<_> = spec
                .nodes
                .iter()
                .zip(0u8..)
                .map(|(node, index)| {
                    let start = Start {
                        cluster_id: &cluster.id,
                        index,
                        slot,
                        dir: cluster.dir.join(&node.name),
                        in_memory: spec.in_memory,
                        client_key: &cluster.client_key,
                        client_public_key: &public,
                    };
                    scope.spawn(move || Node::start(node, start))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ClusterError::Node {
                            node: "?".into(),
                            detail: "starting it panicked".into(),
                        })
                    })
                })
                .collect()
        });
        let mut first_error = None;
        for result in started {
            match result {
                Ok(node) => cluster.nodes.push(node),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if spec.apt_mirror {
            cluster.start_apt_proxy()?;
        }
        let lines: String = cluster
            .nodes
            .iter()
            .map(|n| n.known_hosts_line() + "\n")
            .collect();
        fs::write(&cluster.known_hosts, lines)
            .map_err(io(format!("writing {}", cluster.known_hosts.display())))?;
        let config: String = cluster
            .nodes
            .iter()
            .map(|n| cluster.host_block(n, &n.ip().to_string(), n.ssh_port()))
            .collect();
        fs::write(&cluster.ssh_config, config)
            .map_err(io(format!("writing {}", cluster.ssh_config.display())))?;
        Ok(cluster)
    }

    /// The cluster's id, part of every name it uses (`nd-<id>-<i>` namespaces).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Limits what this machine (the deployer) sends to the nodes to
    /// `rate_mbit` Mbit/s, as a slow uplink would, leaving the nodes' own
    /// network between each other unshaped; `None` lifts the limit.
    pub fn shape_uplink(&self, rate_mbit: Option<u32>) -> Result<()> {
        crate::net::shape_bridge(&self.id, rate_mbit)
    }

    /// Bytes this machine sent to the nodes so far (through its uplink,
    /// not what the nodes sent each other).
    pub fn uplink_sent_bytes(&self) -> Result<u64> {
        crate::net::bridge_sent_bytes(&self.id)
    }

    /// A network namespace of its own for the deployer, on the cluster's
    /// bridge (address `.254`) behind a link of `rate_mbit` Mbit/s each way
    /// (`None`: unshaped), made the first time and reshaped after; returns
    /// its name, to run a deployer in it with `ip netns exec NAME …`. The
    /// nodes' network between each other stays unshaped. Unlike
    /// [`Cluster::shape_uplink`] (for a deployer in this process, whose
    /// replies come back unshaped) both directions are shaped, as on a real
    /// uplink, so that a link probe reads it right.
    pub fn deployer_netns(&self, rate_mbit: Option<u32>) -> Result<String> {
        let mut deployer = self.deployer.lock().unwrap_or_else(|e| e.into_inner());
        if deployer.is_none() {
            *deployer = Some(net::Link::create(&self.id, net::DEPLOYER, self.slot)?);
        }
        let link = deployer.as_ref().ok_or_else(|| ClusterError::Node {
            node: "deployer".to_owned(),
            detail: "no link".to_owned(),
        })?;
        link.shape(rate_mbit)?;
        Ok(link.netns.clone())
    }

    /// Adds `rtt` of round trip between the deployer's namespace
    /// ([`Cluster::deployer_netns`], made first) and every node, leaving
    /// the nodes' network between each other as it was: a delaying relay
    /// per node listens in that namespace on `127.0.0.1`, port 30001 and
    /// up, and forwards across the deployer's link to the node's sshd.
    /// Returns an OpenSSH config naming the nodes as
    /// [`Cluster::ssh_config`] does but reaching them there (their host
    /// keys listed for those ports in [`Cluster::known_hosts`]). Peers
    /// still reach each other at [`Node::ip`], so a deploy through it
    /// needs each node's `peerAddress`. Made once per cluster.
    pub fn delay_deployer(&self, rtt: std::time::Duration) -> Result<PathBuf> {
        let netns = self
            .with_deployer(|link| link.netns.clone())
            .ok_or_else(|| ClusterError::Node {
                node: "deployer".to_owned(),
                detail: "make its namespace first (Cluster::deployer_netns)".to_owned(),
            })?;
        let mut delays = self
            .deployer_delays
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !delays.is_empty() {
            return Err(ClusterError::Node {
                node: "deployer".to_owned(),
                detail: "its round trip is already delayed".to_owned(),
            });
        }
        let (mut config, mut known) = (String::new(), String::new());
        for (i, node) in self.nodes.iter().enumerate() {
            let port = 30001 + i as u16;
            delays.push(DelayRelay::start(
                &netns,
                SocketAddr::from(([127, 0, 0, 1], port)),
                SocketAddr::from((node.ip(), node.ssh_port())),
                rtt,
            )?);
            config += &self.host_block(node, "127.0.0.1", port);
            known += &format!("[127.0.0.1]:{port} {}\n", node.host_public_key());
        }
        let mut hosts = fs::read_to_string(&self.known_hosts)
            .map_err(io(format!("reading {}", self.known_hosts.display())))?;
        hosts += &known;
        fs::write(&self.known_hosts, hosts)
            .map_err(io(format!("writing {}", self.known_hosts.display())))?;
        let path = self.dir.join("ssh_config_delayed");
        fs::write(&path, config).map_err(io(format!("writing {}", path.display())))?;
        Ok(path)
    }

    /// `f` of the deployer's link, if its namespace was made.
    fn with_deployer<T>(&self, f: impl FnOnce(&net::Link) -> T) -> Option<T> {
        let deployer = self.deployer.lock().unwrap_or_else(|e| e.into_inner());
        deployer.as_ref().map(f)
    }

    /// Bytes the deployer's namespace sent so far ([`Cluster::deployer_netns`]).
    pub fn deployer_sent_bytes(&self) -> Result<u64> {
        // What its veth's host end received.
        self.with_deployer(|link| net::counter(&link.host_if, "rx_bytes"))
            .unwrap_or(Ok(0))
    }

    /// The nodes, in the order of the spec.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    /// The client private key authorized on every node for `root` and `deploy`.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// An OpenSSH known_hosts file listing every node's host key.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// An OpenSSH client config file with a `Host` block per node, named as the
    /// node, logging in as `root` with the cluster's key and known_hosts:
    /// `ssh -F <file> node0`, `ssh -F <file> -J node0 deploy@node1`.
    pub fn ssh_config(&self) -> &Path {
        &self.ssh_config
    }

    /// Options for our own SSH transport to reach the nodes as the cluster's
    /// ssh_config describes them (node names as hosts), without ssh-agent,
    /// with a 5 s connect timeout.
    pub fn ssh_options(&self) -> deploy_ssh::SshOptions {
        deploy_ssh::SshOptions {
            config_file: deploy_ssh::ConfigFile::Path(self.ssh_config.clone()),
            agent: deploy_ssh::Agent::Disabled,
            connect_timeout: std::time::Duration::from_secs(5),
            ..deploy_ssh::SshOptions::default()
        }
    }

    /// Where the apt proxy of a cluster started
    /// [`ClusterSpec::with_apt_mirror`] listens, if it runs (it does when the
    /// cluster has a template node).
    pub fn apt_proxy(&self) -> Option<SocketAddr> {
        self.apt_proxy.as_ref().map(AptProxy::addr)
    }

    /// Starts the apt proxy on the host's address of the cluster's network,
    /// forwarding to the hosts of the template nodes' apt sources, and points
    /// those nodes' apt at it.
    fn start_apt_proxy(&mut self) -> Result<()> {
        let templated: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.kind() != NodeKind::LocalNix)
            .collect();
        let Some(first) = templated.first() else {
            return Ok(());
        };
        let mut hosts: Vec<String> = templated
            .iter()
            .flat_map(|n| apt_proxy::mirror_hosts(&n.root()))
            .collect();
        hosts.sort();
        hosts.dedup();
        if hosts.is_empty() {
            return Err(ClusterError::Node {
                node: first.name().to_owned(),
                detail: "its apt sources name no http:// mirror for the apt proxy".into(),
            });
        }
        let log = self.dir.join("apt-proxy.log");
        let proxy = AptProxy::start(first.host_ip(), hosts, &log)?;
        for node in &templated {
            proxy.configure(&node.root())?;
        }
        self.apt_proxy = Some(proxy);
        Ok(())
    }

    /// The `Host` block of `node` in [`Cluster::ssh_config`], reaching it
    /// at `host`, `port`.
    fn host_block(&self, node: &Node, host: &str, port: u16) -> String {
        format!(
            "Host {}\n  HostName {}\n  Port {}\n  User root\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  \
             BatchMode yes\n",
            node.name(),
            host,
            port,
            self.client_key.display(),
            self.known_hosts.display()
        )
    }

    /// The OpenSSH client arguments that log in to `node` as `user`
    /// non-interactively with the cluster's key and known_hosts (then the command).
    pub fn ssh_args(&self, node: &Node, user: &str) -> Vec<String> {
        vec![
            "-i".into(),
            self.client_key.to_string_lossy().into_owned(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=5".into(),
            format!("{user}@{}", node.ip()),
        ]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.apt_proxy = None;
        self.deployer_delays
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.nodes.clear();
        if let Err(e) = state::remove_cluster(&self.id) {
            eprintln!("test-cluster: tearing down cluster {}: {e}", self.id);
        }
    }
}
