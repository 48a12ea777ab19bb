//! A node's CPU time, counted by a cgroup (v1 `cpuacct`) of its own that
//! its services join when they start: everything they fork (sshd's
//! sessions, `nix-daemon --stdio`, a receiver) is counted, including
//! processes that have already exited, and nothing of the harness's own
//! `nsenter` commands is.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{io, Result};

/// Where cgroup v1's cpuacct hierarchy is mounted.
const CPUACCT: &str = "/sys/fs/cgroup/cpuacct";

/// The node's cgroup (made on first use).
#[derive(Debug)]
pub(crate) struct CpuGroup {
    dir: PathBuf,
}

impl CpuGroup {
    /// The cgroup named after the node's network namespace, if this machine
    /// has cpuacct (else `None`: CPU is then not counted).
    pub(crate) fn new(netns: &str) -> Option<Self> {
        let dir = PathBuf::from(CPUACCT).join(netns);
        (fs::create_dir_all(&dir).is_ok() && dir.join("cgroup.procs").exists())
            .then_some(Self { dir })
    }

    /// Moves process `pid` (and its future children) into the group.
    pub(crate) fn join(&self, pid: u32) -> Result<()> {
        let procs = self.dir.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(io(format!("writing {}", procs.display())))
    }

    /// CPU time used by the group's processes so far (user and system).
    pub(crate) fn usage(&self) -> Result<Duration> {
        let file = self.dir.join("cpuacct.usage");
        let text = fs::read_to_string(&file).map_err(io(format!("reading {}", file.display())))?;
        let nanos: u64 = text.trim().parse().map_err(|e| {
            io(format!("parsing {}", file.display()))(std::io::Error::other(format!("{e}")))
        })?;
        Ok(Duration::from_nanos(nanos))
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // Empty once the node's processes are gone; a leftover is harmless
        // and reaped with the cluster's name later.
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Removes the (empty) cgroups of namespaces named `prefix*`.
pub(crate) fn remove_with_prefix(prefix: &str) {
    for entry in fs::read_dir(CPUACCT).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = fs::remove_dir(entry.path());
        }
    }
}
