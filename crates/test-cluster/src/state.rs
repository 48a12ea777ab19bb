//! What the harness records on the machine, and the reaping of clusters left
//! behind by crashed runs.
//!
//! Every cluster has an id of 6 characters, reserved by making the directory
//! `/run/nix-deploy-cluster/<id>`, which holds `owner`: the pid and start time
//! of the owning process. Its nodes' namespaces are named `nd-<id>-<i>`, its
//! bridge `nd<id>b` and host-side veths `nd<id>h<i>`, its files live in
//! `/var/tmp/nix-deploy-cluster/<id>`, and its /24 (`10.213.<n>.0/24`) is
//! reserved by a symlink `/run/nix-deploy-cluster/slots/<n>` pointing at `<id>`. A
//! cluster whose owner process is gone is stale: [`reap_stale`] removes all of
//! it. Reaping and id reservation hold an exclusive lock on
//! `/run/nix-deploy-cluster/lock`, so they are safe across threads and processes.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cmd::{cmd, kill, run};
use crate::error::{io, ClusterError, Result};

/// Where clusters are recorded (owners, address slots, the lock).
pub const STATE_ROOT: &str = "/run/nix-deploy-cluster";
/// Where the nodes' files live (overlay upper layers, keys, private stores).
pub const DATA_ROOT: &str = "/var/tmp/nix-deploy-cluster";

/// The state directory of cluster `id`.
pub(crate) fn state_dir(id: &str) -> PathBuf {
    PathBuf::from(STATE_ROOT).join(id)
}

/// The data directory of cluster `id`.
pub(crate) fn data_dir(id: &str) -> PathBuf {
    PathBuf::from(DATA_ROOT).join(id)
}

fn slots_dir() -> PathBuf {
    PathBuf::from(STATE_ROOT).join("slots")
}

/// The exclusive machine-wide lock of the harness, released on drop.
pub(crate) struct Lock(File);

impl Lock {
    /// Waits for and takes the lock.
    pub(crate) fn take() -> Result<Lock> {
        fs::create_dir_all(slots_dir()).map_err(io(format!("creating {STATE_ROOT}/slots")))?;
        let path = PathBuf::from(STATE_ROOT).join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        file.lock()
            .map_err(io(format!("locking {}", path.display())))?;
        Ok(Lock(file))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; this only makes it prompt.
        let _ = self.0.unlock();
    }
}

/// The start time (in clock ticks since boot) of process `pid`, if it exists.
fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3; start time is field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// The owner record of this process: its pid and start time.
fn owner_record() -> String {
    let pid = std::process::id();
    format!("{pid} {}", start_time(pid).unwrap_or_default())
}

/// Whether the process an owner record names still runs.
fn owner_alive(record: &str) -> bool {
    let mut it = record.split_whitespace();
    match (it.next().and_then(|p| p.parse::<u32>().ok()), it.next()) {
        (Some(pid), Some(start)) => start_time(pid).as_deref() == Some(start),
        _ => false,
    }
}

/// Six random characters from `[a-z0-9]`.
fn random_id() -> Result<String> {
    let mut bytes = [0u8; 6];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("reading /dev/urandom"))?;
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// Reserves a fresh cluster id owned by this process; the caller holds the [`Lock`].
pub(crate) fn reserve_id(_lock: &Lock) -> Result<String> {
    loop {
        let id = random_id()?;
        let dir = state_dir(&id);
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::write(dir.join("owner"), owner_record())
                    .map_err(io(format!("writing {}/owner", dir.display())))?;
                return Ok(id);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(format!("creating {}", dir.display()))(e)),
        }
    }
}

/// Reserves a free /24 of 10.213.0.0/16 for cluster `id`; returns its number.
pub(crate) fn reserve_slot(id: &str) -> Result<u8> {
    for n in 0..=u8::MAX {
        match std::os::unix::fs::symlink(id, slots_dir().join(n.to_string())) {
            Ok(()) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(format!("reserving address slot {n}"))(e)),
        }
    }
    Err(ClusterError::NoFreeSlot)
}

/// Releases the address slots of cluster `id`, or of every cluster without a state directory.
fn release_slots(id: Option<&str>) {
    let Ok(entries) = fs::read_dir(slots_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let release = match id {
            Some(id) => target == id,
            None => !state_dir(&target).exists(),
        };
        if release {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Kills every process in network namespace `netns` but those in `except`, and
/// waits until they are gone.
pub(crate) fn kill_netns_processes(netns: &str, except: &[Option<u32>]) {
    let Ok(pids) = run(&mut cmd("ip", ["netns", "pids", netns])) else {
        return;
    };
    let pids: Vec<u32> = pids
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| !except.contains(&Some(*p)))
        .collect();
    for pid in &pids {
        kill(*pid);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && pids.iter().any(|p| running(*p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Network namespaces whose name starts with `prefix`.
fn netns_with_prefix(prefix: &str) -> Vec<String> {
    run(&mut cmd("ip", ["netns", "list"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Network interfaces of the host namespace whose name starts with `prefix`.
fn links_with_prefix(prefix: &str) -> Vec<String> {
    run(&mut cmd("ip", ["-o", "link", "show"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Removes everything of cluster `id` that is left: processes, namespaces,
/// bridge and veths, files, address slot and its state directory.
pub(crate) fn remove_cluster(id: &str) -> Result<()> {
    for netns in netns_with_prefix(&format!("nd-{id}-")) {
        kill_netns_processes(&netns, &[]);
        let _ = run(&mut cmd("ip", ["netns", "delete", &netns]));
    }
    crate::node::remove_cpu_groups(&format!("nd-{id}-"));
    for link in links_with_prefix(&format!("nd{id}")) {
        let _ = run(&mut cmd("ip", ["link", "delete", &link]));
    }
    let data = data_dir(id);
    crate::rootfs::unmount_below(&data);
    match fs::remove_dir_all(&data) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            return Err(io(format!("removing {}", data.display()))(e))
        }
        _ => {}
    }
    release_slots(Some(id));
    match fs::remove_dir_all(state_dir(id)) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(io(format!("removing {}", state_dir(id).display()))(e))
        }
        _ => Ok(()),
    }
}

/// Removes the leftovers of clusters whose owning process is dead (crashed or
/// killed runs, leaked clusters); returns how many clusters were reaped.
/// [`crate::Cluster::start`] calls it first.
pub fn reap_stale() -> Result<usize> {
    let lock = Lock::take()?;
    reap_stale_locked(&lock)
}

/// [`reap_stale`], for a caller that holds the [`Lock`].
pub(crate) fn reap_stale_locked(_lock: &Lock) -> Result<usize> {
    let mut stale = Vec::new();
    let entries = fs::read_dir(STATE_ROOT).map_err(io(format!("listing {STATE_ROOT}")))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "slots" || name == "lock" {
            continue;
        }
        let owner = fs::read_to_string(entry.path().join("owner")).unwrap_or_default();
        if !owner_alive(&owner) {
            stale.push(name);
        }
    }
    // Namespaces and data of clusters whose state directory is already gone.
    let orphans = netns_with_prefix("nd-")
        .into_iter()
        .filter_map(|n| n.split('-').nth(1).map(str::to_owned))
        .chain(
            fs::read_dir(DATA_ROOT)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        )
        .filter(|id| !state_dir(id).exists());
    stale.extend(orphans);
    stale.sort();
    stale.dedup();
    for id in &stale {
        remove_cluster(id)?;
    }
    release_slots(None);
    Ok(stale.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_alive_only_while_their_process_runs() {
        assert!(owner_alive(&owner_record()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let record = format!(
            "{} {}",
            child.id(),
            start_time(child.id()).unwrap_or_default()
        );
        child.wait().unwrap();
        assert!(!owner_alive(&record));
        // Same pid, another start time: a reused pid.
        assert!(!owner_alive(&format!("{} 1", std::process::id())));
        assert!(!owner_alive(""));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn ids_are_six_lowercase_alphanumerics() {
        let id = random_id().unwrap();
        assert_eq!(id.len(), 6);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
}
