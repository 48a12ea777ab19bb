//! Nodes that boot with systemd as pid 1 (`ClusterSpec::systemd_node`),
//! for what only a real systemd shows: transient timers (`systemd-run`),
//! units enabled and restarted with the real `systemctl`, `Type=notify`
//! services. The node's root (the template as the lower layer of an
//! overlay, mounted in the host's namespace under the node's directory) is
//! booted by `systemd-nspawn --boot` inside the node's network namespace;
//! sshd runs as its `ssh.service`, and on template kinds with Nix, the
//! daemon as `nix-daemon.socket` and `.service` (the units upstream Nix
//! ships). The container's pid 1 is the node's init: `Node::command` and
//! `Node::root` go through it as for the other kinds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{cmd, describe, run};
use crate::error::{io, ClusterError, Result};
use crate::rootfs::{inside, Holder};
use crate::spec::NodeKind;

/// How long a node may take to boot (until its init shows up).
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's socket unit, as upstream Nix ships it.
const NIX_DAEMON_SOCKET: &str = "[Unit]
Description=Nix Daemon Socket
Before=multi-user.target
RequiresMountsFor=/nix/store
ConditionPathIsReadWrite=/nix/var/nix/daemon-socket

[Socket]
ListenStream=/nix/var/nix/daemon-socket/socket

[Install]
WantedBy=sockets.target
";

/// The daemon's service unit, as upstream Nix ships it (Debian's binary).
const NIX_DAEMON_SERVICE: &str = "[Unit]
Description=Nix Daemon
RequiresMountsFor=/nix/store
RequiresMountsFor=/nix/var
RequiresMountsFor=/nix/var/nix/db
ConditionPathIsReadWrite=/nix/var/nix/daemon-socket

[Service]
ExecStart=@/usr/bin/nix-daemon nix-daemon --daemon
KillMode=process
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
";

/// Units with no business in a test node, masked to boot faster.
const MASKED: &[&str] = &[
    "systemd-networkd.service",
    "systemd-networkd-wait-online.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
    "getty@.service",
    "console-getty.service",
    "systemd-logind.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "fstrim.timer",
];

/// Mounts the node's root for booting: `kind`'s template under an overlay
/// at `dir/root`, in the host's namespace; returns the root.
pub(crate) fn mount_root(kind: NodeKind, name: &str, dir: &Path) -> Result<PathBuf> {
    let template = kind.template().ok_or_else(|| ClusterError::Node {
        node: name.to_owned(),
        detail: "only the template kinds (trixie, bare) boot with systemd".to_owned(),
    })?;
    let mkdir = |sub: &str| -> Result<PathBuf> {
        let p = dir.join(sub);
        fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        Ok(p)
    };
    let (upper, work, root) = (mkdir("upper")?, mkdir("work")?, mkdir("root")?);
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        template.display(),
        upper.display(),
        work.display()
    );
    run(&mut cmd(
        "mount",
        [
            "-t",
            "overlay",
            "overlay",
            "-o",
            &options,
            &root.to_string_lossy(),
        ],
    ))?;
    Ok(root)
}

/// Writes the node's hostname, masks what a test node does not need and
/// enables Nix's daemon units where Nix is installed.
pub(crate) fn configure(root: &Path, name: &str) -> Result<()> {
    let write = |path: &str, text: &str| -> Result<()> {
        let p = inside(root, path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        fs::write(&p, text).map_err(io(format!("writing {}", p.display())))
    };
    let link = |target: &str, path: &str| -> Result<()> {
        let p = inside(root, path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        let _ = fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p).map_err(io(format!("linking {}", p.display())))
    };
    write("/etc/hostname", &format!("{name}\n"))?;
    for unit in MASKED {
        link("/dev/null", &format!("/etc/systemd/system/{unit}"))?;
    }
    if inside(root, "/usr/bin/nix-daemon").exists() {
        write("/etc/systemd/system/nix-daemon.socket", NIX_DAEMON_SOCKET)?;
        write("/etc/systemd/system/nix-daemon.service", NIX_DAEMON_SERVICE)?;
        link(
            "/etc/systemd/system/nix-daemon.socket",
            "/etc/systemd/system/sockets.target.wants/nix-daemon.socket",
        )?;
        let socket_dir = inside(root, "/nix/var/nix/daemon-socket");
        fs::create_dir_all(&socket_dir)
            .map_err(io(format!("creating {}", socket_dir.display())))?;
    }
    Ok(())
}

/// Boots `root` with `systemd-nspawn` in network namespace `netns`; the
/// holder is nspawn, the init the container's pid 1. nspawn's output goes
/// to `dir/nspawn.log`.
pub(crate) fn boot(name: &str, netns: &str, root: &Path, dir: &Path) -> Result<Holder> {
    let log = dir.join("nspawn.log");
    let log_file = fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
    let mut nspawn = cmd(
        "systemd-nspawn",
        [
            "--quiet",
            "--register=no",
            // No host systemd to make a scope unit with: stay in ours.
            "--keep-unit",
            "--boot",
            "--console=passive",
            "--link-journal=no",
            "--private-users=no",
            "--resolv-conf=off",
            "--timezone=off",
        ],
    );
    nspawn
        .arg(format!("--directory={}", root.display()))
        .arg(format!("--machine={netns}"))
        .arg(format!("--network-namespace-path=/run/netns/{netns}"))
        // systemd 257 boots on the unified cgroup hierarchy only.
        .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(io("logging nspawn"))?)
        .stderr(log_file);
    let child: Child = nspawn
        .spawn()
        .map_err(io(format!("running `{}`", describe(&nspawn))))?;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(init) = container_init(netns) {
            return Ok(Holder { child, init });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    Err(ClusterError::Node {
        node: name.to_owned(),
        detail: format!(
            "systemd-nspawn did not boot within {} s: {}",
            BOOT_TIMEOUT.as_secs(),
            fs::read_to_string(&log).unwrap_or_default().trim()
        ),
    })
}

/// The host pid of the process in `netns` that is pid 1 of its own pid
/// namespace and runs systemd.
fn container_init(netns: &str) -> Option<u32> {
    let pids = run(&mut cmd("ip", ["netns", "pids", netns])).ok()?;
    pids.split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let innermost_is_1 = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|ids| ids.split_whitespace().last())
                == Some("1");
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            innermost_is_1 && comm.trim() == "systemd"
        })
}
