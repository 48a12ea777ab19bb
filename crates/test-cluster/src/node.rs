//! One node: its namespaces, file systems, users, host key and sshd.

mod cpu;
pub(crate) mod delay;
mod services;
mod store;
mod systemd;

pub(crate) use cpu::remove_with_prefix as remove_cpu_groups;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;

use crate::cmd;
use crate::error::Result;
use crate::net::Link;
use crate::rootfs;
use crate::spec::{NodeKind, NodeSpec};
use crate::state::kill_netns_processes;

/// A running node. Dropping it kills its processes and deletes its network
/// namespace; its files go with the [`crate::Cluster`]'s data directory.
#[derive(Debug)]
pub struct Node {
    name: String,
    kind: NodeKind,
    /// Whether systemd is its pid 1 (sshd and Nix's daemon are its units).
    systemd: bool,
    link: Link,
    dir: PathBuf,
    client_key: PathBuf,
    host_public_key: String,
    holder: rootfs::Holder,
    sshd: Mutex<Option<Child>>,
    nix_daemon: Mutex<Option<Child>>,
    /// The round-trip delay in front of sshd, if any ([`Node::delay`]).
    relay: Mutex<Option<delay::DelayRelay>>,
    cpu: Option<cpu::CpuGroup>,
}

/// What a node needs from its cluster to start.
pub(crate) struct Start<'a> {
    pub cluster_id: &'a str,
    pub index: u8,
    pub slot: u8,
    pub dir: PathBuf,
    pub client_key: &'a Path,
    pub client_public_key: &'a str,
    pub in_memory: bool,
}

impl Node {
    /// Makes the node: namespace and veth, file systems, users and keys, then sshd.
    pub(crate) fn start(spec: &NodeSpec, s: Start<'_>) -> Result<Node> {
        if s.in_memory {
            rootfs::mount_tmpfs(&s.dir)?;
        }
        let link = Link::create(s.cluster_id, s.index, s.slot)?;
        if spec.systemd {
            return Node::boot(spec, s, link);
        }
        let holder = match rootfs::start_holder(spec.kind, &spec.name, &link.netns, &s.dir) {
            Ok(h) => h,
            Err(e) => {
                kill_netns_processes(&link.netns, &[]);
                link.delete();
                return Err(e);
            }
        };
        let mut node = Node {
            name: spec.name.clone(),
            kind: spec.kind,
            systemd: false,
            link,
            dir: s.dir,
            client_key: s.client_key.to_owned(),
            host_public_key: String::new(),
            holder,
            sshd: Mutex::new(None),
            nix_daemon: Mutex::new(None),
            relay: Mutex::new(None),
            cpu: None,
        };
        node.cpu = cpu::CpuGroup::new(&node.link.netns);
        let root = node.root();
        rootfs::ensure_isolated(node.kind, &node.name, &root)?;
        if node.kind == NodeKind::LocalNix {
            rootfs::write_local_nix_conf(&root)?;
            node.run_ok("id -u deploy >/dev/null 2>&1 || useradd -m -s /bin/bash -p '*' deploy; usermod -p '*' root")?;
        }
        node.host_public_key = rootfs::make_host_key(node.kind, &node.name, &root)?;
        for user in ["root", "deploy"] {
            let account = rootfs::user(&root, &node.name, user)?;
            rootfs::authorize(&root, &account, s.client_public_key)?;
        }
        node.start_sshd()?;
        Ok(node)
    }

    /// Makes a node that boots with systemd: its root is written (keys,
    /// accounts, units) before it boots; its sshd is `ssh.service`.
    fn boot(spec: &NodeSpec, s: Start<'_>, link: Link) -> Result<Node> {
        let booted = (|| {
            let root = systemd::mount_root(spec.kind, &spec.name, &s.dir)?;
            systemd::configure(&root, &spec.name)?;
            let host_public_key = rootfs::make_host_key(spec.kind, &spec.name, &root)?;
            for user in ["root", "deploy"] {
                let account = rootfs::user(&root, &spec.name, user)?;
                rootfs::authorize(&root, &account, s.client_public_key)?;
            }
            let holder = systemd::boot(&spec.name, &link.netns, &root, &s.dir)?;
            Ok((host_public_key, holder))
        })();
        let (host_public_key, holder) = match booted {
            Ok(b) => b,
            Err(e) => {
                kill_netns_processes(&link.netns, &[]);
                link.delete();
                rootfs::unmount_below(&s.dir);
                return Err(e);
            }
        };
        let node = Node {
            name: spec.name.clone(),
            kind: spec.kind,
            systemd: true,
            link,
            dir: s.dir,
            client_key: s.client_key.to_owned(),
            host_public_key,
            holder,
            sshd: Mutex::new(None),
            nix_daemon: Mutex::new(None),
            relay: Mutex::new(None),
            cpu: None,
        };
        node.start_sshd()?;
        Ok(node)
    }

    /// The node's name (also its hostname).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether systemd is the node's pid 1.
    pub fn has_systemd(&self) -> bool {
        self.systemd
    }

    /// What the node is.
    pub fn kind(&self) -> NodeKind {
        self.kind
    }

    /// The node's address; its sshd listens there on [`Node::ssh_port`].
    pub fn ip(&self) -> Ipv4Addr {
        self.link.node_ip
    }

    /// The host's address on the cluster's network (the node reaches the host there).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.link.host_ip
    }

    /// The SSH port: 22, in the node's own network namespace.
    pub fn ssh_port(&self) -> u16 {
        22
    }

    /// The node's network namespace, for `ip netns exec`.
    pub fn netns(&self) -> &str {
        &self.link.netns
    }

    /// The host end of the node's veth, a port of the cluster's bridge (where
    /// [`Node::shape`] applies on the host side).
    pub fn host_interface(&self) -> &str {
        &self.link.host_if
    }

    /// The client private key (ed25519, no passphrase) authorized for `root` and `deploy`.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The node's host public key, `ssh-ed25519 BASE64`.
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// The node's line for an OpenSSH known_hosts file.
    pub fn known_hosts_line(&self) -> String {
        format!("{} {}", self.ip(), self.host_public_key)
    }

    /// The node's root directory as seen from the host (`/proc/<init>/root`):
    /// files written there land in the node.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.init))
    }

    /// The host's pid of the node's init (pid 1 in the node), for `nsenter --target`.
    pub fn pid(&self) -> u32 {
        self.holder.init
    }

    /// Host pids of every process in the node's network namespace (namespace
    /// holder and init, sshd, sessions...).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = cmd::run(&mut cmd::cmd("ip", ["netns", "pids", self.netns()]))?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// A command running `program` inside the node, as root, without SSH: in its
    /// network, mount, UTS and pid namespaces and its root, with a clean environment.
    /// (`nsenter` forks `program` into the node's pid namespace and waits for it.)
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["--target", &self.holder.init.to_string()]);
        c.args([
            "--net", "--mount", "--uts", "--pid", "--root", "--wd", "--", program,
        ]);
        c.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("USER", "root")
            .env("LANG", "C.UTF-8");
        c
    }

    /// Runs shell code inside the node (see [`Node::command`]), whatever its status.
    pub fn run(&self, shell: &str) -> Result<Output> {
        cmd::output(self.command("/bin/sh").args(["-c", shell]))
    }

    /// Runs shell code inside the node; fails unless it exits 0; returns its stdout.
    pub fn run_ok(&self, shell: &str) -> Result<String> {
        cmd::run(self.command("/bin/sh").args(["-c", shell]))
    }

    /// Authorizes one more public key (an authorized_keys line, e.g. an ecdsa,
    /// rsa or passphrase-protected client key of a test) for `user` on the node.
    pub fn authorize_key(&self, user: &str, public_key: &str) -> Result<()> {
        let root = self.root();
        let account = rootfs::user(&root, &self.name, user)?;
        rootfs::authorize(&root, &account, public_key)
    }

    /// Limits the node's link to `rate_mbit` Mbit/s each way (`tc qdisc ... tbf`).
    pub fn shape(&self, rate_mbit: u32) -> Result<()> {
        self.link.shape(Some(rate_mbit))
    }

    /// Lifts the limit [`Node::shape`] set.
    pub fn unshape(&self) -> Result<()> {
        self.link.shape(None)
    }

    /// Cuts the node's link (its host-side veth goes down): packets are
    /// lost both ways while open connections stay open on both ends.
    pub fn cut(&self) -> Result<()> {
        self.link.set_up(false)
    }

    /// Brings the link [`Node::cut`] took down back up.
    pub fn restore(&self) -> Result<()> {
        self.link.set_up(true)
    }

    /// Adds `rtt` of round-trip time to SSH connections to the node (on top
    /// of [`Node::shape`]'s limit), or removes it with `Duration::ZERO`:
    /// sshd moves behind a delaying relay on the node's address (see
    /// `node/delay.rs`). Restarts sshd, so open connections drop.
    pub fn delay(&self, rtt: std::time::Duration) -> Result<()> {
        if self.systemd {
            return Err(crate::error::ClusterError::Node {
                node: self.name.clone(),
                detail: "round-trip delays are for the chroot kinds (sshd runs as a unit here)"
                    .to_owned(),
            });
        }
        self.stop_sshd();
        let relay = match rtt.is_zero() {
            true => None,
            false => Some(delay::DelayRelay::start(
                self.netns(),
                std::net::SocketAddr::from((self.ip(), self.ssh_port())),
                std::net::SocketAddr::from(([127, 0, 0, 1], self.ssh_port())),
                rtt,
            )?),
        };
        *self.relay.lock().unwrap_or_else(|e| e.into_inner()) = relay;
        self.start_sshd()
    }

    /// The round trip [`Node::delay`] added.
    pub fn delayed(&self) -> std::time::Duration {
        self.relay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(std::time::Duration::ZERO, |r| r.rtt())
    }

    /// The CPU time the node's services (sshd and everything it started,
    /// the socket nix-daemon and its workers) used so far, exited processes
    /// included; `None` where this machine has no cpuacct cgroup.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        self.cpu.as_ref().and_then(|c| c.usage().ok())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_nix_daemon();
        if self.systemd {
            // Its pid namespace ends with its init.
            cmd::kill(self.holder.init);
        } else {
            self.stop_sshd();
        }
        let _ = self.holder.child.kill();
        let _ = self.holder.child.wait();
        kill_netns_processes(&self.link.netns, &[]);
        *self.relay.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.link.delete();
        rootfs::unmount_below(&self.dir);
    }
}
