//! One node: its namespaces, file systems, users, host key and sshd.

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cmd::{self, describe};
use crate::error::{io, ClusterError, Result};
use crate::net::Link;
use crate::rootfs;
use crate::spec::{NodeKind, NodeSpec};
use crate::state::kill_netns_processes;

/// How long a node's sshd may take to accept connections.
const SSHD_TIMEOUT: Duration = Duration::from_secs(10);

/// A running node. Dropping it kills its processes and deletes its network
/// namespace; its files go with the [`crate::Cluster`]'s data directory.
#[derive(Debug)]
pub struct Node {
    name: String,
    kind: NodeKind,
    link: Link,
    dir: PathBuf,
    client_key: PathBuf,
    host_public_key: String,
    holder: Child,
    sshd: Mutex<Option<Child>>,
    nix_daemon: Mutex<Option<Child>>,
}

/// What a node needs from its cluster to start.
pub(crate) struct Start<'a> {
    pub cluster_id: &'a str,
    pub index: u8,
    pub slot: u8,
    pub dir: PathBuf,
    pub client_key: &'a Path,
    pub client_public_key: &'a str,
}

impl Node {
    /// Makes the node: namespace and veth, file systems, users and keys, then sshd.
    pub(crate) fn start(spec: &NodeSpec, s: Start<'_>) -> Result<Node> {
        let link = Link::create(s.cluster_id, s.index, s.slot)?;
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
            link,
            dir: s.dir,
            client_key: s.client_key.to_owned(),
            host_public_key: String::new(),
            holder,
            sshd: Mutex::new(None),
            nix_daemon: Mutex::new(None),
        };
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

    /// The node's name (also its hostname).
    pub fn name(&self) -> &str {
        &self.name
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

    /// The node's root directory as seen from the host (`/proc/<holder>/root`):
    /// files written there land in the node.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
    }

    /// Pids of every process in the node (namespace holder, sshd, sessions).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = cmd::run(&mut cmd::cmd("ip", ["netns", "pids", self.netns()]))?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// A command running `program` inside the node, as root, without SSH: in its
    /// network, mount and UTS namespaces and its root, with a clean environment.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["--target", &self.holder.id().to_string()]);
        c.args(["--net", "--mount", "--uts", "--root", "--wd", "--", program]);
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

    fn sshd(&self) -> MutexGuard<'_, Option<Child>> {
        lock(&self.sshd)
    }

    /// Spawns `command` as a service of the node, logging to `<name>.log` in its directory.
    fn spawn_service(&self, mut command: Command, name: &str) -> Result<(Child, PathBuf)> {
        let log = self.dir.join(format!("{name}.log"));
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("opening {}", log.display())))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(io(format!("running `{}`", describe(&command))))?;
        Ok((child, log))
    }

    /// Starts a `nix-daemon` listening on the node's usual socket
    /// (`/nix/var/nix/daemon-socket/socket`), as a packaged Nix would run it, so
    /// that unprivileged users such as `deploy` can use the store. Not on
    /// [`NodeKind::Bare`] nodes.
    pub fn start_nix_daemon(&self) -> Result<()> {
        let mut daemon = lock(&self.nix_daemon);
        if daemon.is_some() {
            return Ok(());
        }
        let socket = self.root().join("nix/var/nix/daemon-socket/socket");
        // A socket left by an earlier daemon would look ready at once.
        let _ = fs::remove_file(&socket);
        let (child, log) = self.spawn_service(self.command("nix-daemon"), "nix-daemon")?;
        *daemon = Some(child);
        let deadline = Instant::now() + SSHD_TIMEOUT;
        while Instant::now() < deadline {
            if UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut c) = daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Err(ClusterError::Node {
            node: self.name.clone(),
            detail: format!(
                "nix-daemon did not listen within {} s (log: {})",
                SSHD_TIMEOUT.as_secs(),
                log.display()
            ),
        })
    }

    /// Stops the `nix-daemon` [`Node::start_nix_daemon`] started.
    pub fn stop_nix_daemon(&self) {
        if let Some(mut c) = lock(&self.nix_daemon).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node's sshd (if not running) and waits until it answers.
    pub fn start_sshd(&self) -> Result<()> {
        let mut sshd = self.sshd();
        if sshd.is_some() {
            return Ok(());
        }
        let mut c = self.command("/usr/sbin/sshd");
        c.args(["-D", "-e", "-o", "UsePAM=no", "-h", self.kind.host_key()]);
        let (child, log) = self.spawn_service(c, "sshd")?;
        *sshd = Some(child);
        self.wait_sshd(sshd, &log)
    }

    /// Waits until the sshd answers with its SSH banner.
    fn wait_sshd(&self, mut sshd: MutexGuard<'_, Option<Child>>, log: &Path) -> Result<()> {
        let addr = SocketAddr::from((self.ip(), self.ssh_port()));
        let deadline = Instant::now() + SSHD_TIMEOUT;
        while Instant::now() < deadline {
            if banner(addr) {
                return Ok(());
            }
            let exited = sshd
                .as_mut()
                .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
            if exited {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut c) = sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Err(ClusterError::SshdTimeout {
            node: self.name.clone(),
            addr,
            secs: SSHD_TIMEOUT.as_secs(),
            log: log.to_owned(),
        })
    }

    /// Kills the node's sshd and every session it serves (every process of the
    /// node but its namespace holder and its `nix-daemon` listener), as when a
    /// VPS's sshd dies: new connections are refused and open ones drop.
    pub fn stop_sshd(&self) {
        if let Some(mut c) = self.sshd().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let daemon = lock(&self.nix_daemon).as_ref().map(Child::id);
        kill_netns_processes(self.netns(), &[Some(self.holder.id()), daemon]);
    }

    /// Limits the node's link to `rate_mbit` Mbit/s each way (`tc qdisc ... tbf`).
    pub fn shape(&self, rate_mbit: u32) -> Result<()> {
        self.link.shape(Some(rate_mbit))
    }

    /// Lifts the limit [`Node::shape`] set.
    pub fn unshape(&self) -> Result<()> {
        self.link.shape(None)
    }
}

/// Whether something at `addr` sends an SSH banner.
fn banner(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

/// Locks `m`; a panic while it was held left an `Option` that is still valid.
fn lock(m: &Mutex<Option<Child>>) -> MutexGuard<'_, Option<Child>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_nix_daemon();
        self.stop_sshd();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        kill_netns_processes(&self.link.netns, &[]);
        self.link.delete();
    }
}
