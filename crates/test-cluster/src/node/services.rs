//! A node's services: its sshd and, on request, a `nix-daemon`, each a child
//! process of the harness: `nsenter` (our child) forks the service into the
//! node's pid namespace and waits for it; stopping one kills that fork.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Node;
use crate::cmd::{child_of, describe, kill};
use crate::error::{io, ClusterError, Result};
use crate::state::kill_netns_processes;

/// How long a node's sshd or nix-daemon may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl Node {
    /// The sshd's slot.
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
    /// [`crate::NodeKind::Bare`] nodes.
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
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if UnixStream::connect(&socket).is_ok() {
                return match daemon.as_ref() {
                    Some(c) => self.count_cpu(c),
                    None => Ok(()),
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(c) = daemon.take() {
            stop(c);
        }
        Err(ClusterError::Node {
            node: self.name.clone(),
            detail: format!(
                "nix-daemon did not listen within {} s (log: {})",
                START_TIMEOUT.as_secs(),
                log.display()
            ),
        })
    }

    /// Stops the `nix-daemon` [`Node::start_nix_daemon`] started.
    pub fn stop_nix_daemon(&self) {
        if let Some(c) = lock(&self.nix_daemon).take() {
            stop(c);
        }
    }

    /// Starts the node's sshd (if not running) and waits until it answers.
    pub fn start_sshd(&self) -> Result<()> {
        let mut sshd = self.sshd();
        if self.systemd {
            // Once systemd is up (its socket answers; boot jobs done), its
            // unit, whether the node booted just now or it was stopped.
            self.run_ok(
                "i=0; until systemctl is-system-running --wait >/dev/null 2>&1 || \
                 [ \"$(systemctl is-system-running 2>/dev/null)\" = degraded ]; do \
                 i=$((i + 1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done; \
                 systemctl start ssh.service",
            )?;
            return self.wait_sshd(sshd, &self.dir.join("nspawn.log"));
        }
        if sshd.is_some() {
            return Ok(());
        }
        let mut c = self.command("/usr/sbin/sshd");
        c.args(["-D", "-e", "-o", "UsePAM=no", "-h", self.kind.host_key()]);
        if self.delayed() > Duration::ZERO {
            // The delay relay has the node's address.
            c.args(["-o", "ListenAddress=127.0.0.1"]);
        }
        let (child, log) = self.spawn_service(c, "sshd")?;
        *sshd = Some(child);
        self.wait_sshd(sshd, &log)
    }

    /// Counts `service` (an `nsenter` that forked it) in the node's CPU.
    fn count_cpu(&self, service: &Child) -> Result<()> {
        match (&self.cpu, child_of(service.id())) {
            (Some(cpu), Some(pid)) => cpu.join(pid),
            _ => Ok(()),
        }
    }

    /// Waits until the sshd answers with its SSH banner.
    fn wait_sshd(&self, mut sshd: MutexGuard<'_, Option<Child>>, log: &Path) -> Result<()> {
        let addr = SocketAddr::from((self.ip(), self.ssh_port()));
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if banner(addr) {
                return match sshd.as_ref() {
                    Some(c) => self.count_cpu(c),
                    None => Ok(()),
                };
            }
            // A unit (systemd nodes) has no child of ours to watch.
            let exited = !self.systemd
                && sshd
                    .as_mut()
                    .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
            if exited {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(c) = sshd.take() {
            stop(c);
        }
        Err(ClusterError::SshdTimeout {
            node: self.name.clone(),
            addr,
            secs: START_TIMEOUT.as_secs(),
            log: log.to_owned(),
        })
    }

    /// Kills the node's sshd and every session it serves (every process of the
    /// node but its namespace holder and its `nix-daemon` listener), as when a
    /// VPS's sshd dies: new connections are refused and open ones drop.
    pub fn stop_sshd(&self) {
        if self.systemd {
            // The unit, then the sessions it leaves (KillMode=process).
            let _ = self.run(
                "systemctl stop ssh.socket ssh.service; pkill -KILL -x sshd-session; pkill -KILL -x sshd",
            );
            return;
        }
        if let Some(c) = self.sshd().take() {
            stop(c);
        }
        let daemon = lock(&self.nix_daemon).as_ref().map(Child::id);
        let spared = [
            Some(self.holder.child.id()),
            Some(self.holder.init),
            daemon,
            daemon.and_then(child_of),
        ];
        kill_netns_processes(self.netns(), &spared);
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

/// Stops a service: kills what `nsenter` forked and lets `nsenter` reap it and
/// exit (killing `nsenter` first would leave the service's zombie to the host's
/// init, and the node's init waiting for it); kills `nsenter` if it had not forked.
fn stop(mut nsenter: Child) {
    match child_of(nsenter.id()) {
        Some(service) => kill(service),
        None => {
            let _ = nsenter.kill();
        }
    }
    let _ = nsenter.wait();
}

/// Locks `m`; a panic while it was held left an `Option` that is still valid.
fn lock(m: &Mutex<Option<Child>>) -> MutexGuard<'_, Option<Child>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
