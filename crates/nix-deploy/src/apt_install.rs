//! The `apt` method of installing Nix on a node: Debian's own packages,
//! installed over a root SSH session with `apt-get` from the node's
//! configured mirror. `nix-bin` brings the tools (`nix-store`, `nix-env`,
//! `nix-daemon`); where systemd runs the node (`/run/systemd/system`
//! exists), `nix-setup-systemd` too: it holds `nix-daemon.socket` and
//! `.service` (started by its postinst), `/etc/nix/nix.conf` and the
//! `nixbld` build users. Without systemd, `nix-daemon --stdio` over SSH
//! still serves the store, which is all a deploy needs as root.
//!
//! Running it again does nothing when the packages are there. A Nix that
//! apt did not install (the official installer's, the `closure` method's)
//! is left alone and reported as an error rather than shadowed by a second
//! one.

use deploy_ssh::SshSession;

use deploy_remote::{node_name, probe, quote, CommandError, Limits};

/// The package with Nix's programs.
pub const NIX_PACKAGE: &str = "nix-bin";
/// The package that runs `nix-daemon` under systemd.
pub const SYSTEMD_PACKAGE: &str = "nix-setup-systemd";

/// How many lines of apt's output an error keeps (its end).
const TAIL_LINES: usize = 20;

/// Seconds apt waits for another apt or dpkg (e.g. unattended-upgrades).
const LOCK_TIMEOUT: u32 = 120;

/// What [`install_nix_with_apt`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AptChange {
    /// The packages were installed already: nothing ran.
    AlreadyInstalled,
    /// These packages were installed.
    Installed(Vec<String>),
}

/// What [`install_nix_with_apt`] did and what the node has now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptReport {
    /// What changed.
    pub change: AptChange,
    /// The installed Nix's version, e.g. `2.26.3`.
    pub nix_version: String,
    /// Whether systemd runs the node (so [`SYSTEMD_PACKAGE`] is installed too).
    pub systemd: bool,
    /// Whether the daemon's socket (`/nix/var/nix/daemon-socket/socket`) exists.
    pub daemon_socket: bool,
}

/// Why Nix could not be installed with apt.
#[derive(Debug, thiserror::Error)]
pub enum AptInstallError {
    /// A command could not run or outlived its time.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// apt needs root.
    #[error(
        "{node}: installing Nix with apt needs root (apt-get and dpkg), and {user} is not root: \
         connect as root (sshUser = \"root\") to install it"
    )]
    NotRoot {
        /// The node.
        node: String,
        /// The SSH user.
        user: String,
    },
    /// The node has no apt.
    #[error("{node}: no apt-get on the node: the `apt` method needs Debian (or a derivative)")]
    NoApt {
        /// The node.
        node: String,
    },
    /// A Nix that apt did not install is there.
    #[error(
        "{node}: Nix is already installed at {path}, not by apt ({NIX_PACKAGE} is not \
         installed): use that Nix, or remove it before installing with apt"
    )]
    ForeignNix {
        /// The node.
        node: String,
        /// Where its `nix-store` is.
        path: String,
    },
    /// An apt command failed.
    #[error("{node}: `{command}` failed ({status}); the end of its output:\n{output}")]
    Apt {
        /// The node.
        node: String,
        /// What ran.
        command: String,
        /// How it ended.
        status: String,
        /// The last lines of its output (stdout and stderr).
        output: String,
    },
    /// The node answered something unexpected (e.g. Nix does not run after
    /// the install).
    #[error("{node}: {detail}")]
    Node {
        /// The node.
        node: String,
        /// What went wrong.
        detail: String,
    },
}

/// What the node has, from one probe.
#[derive(Debug, Default, PartialEq, Eq)]
struct Probe {
    uid: String,
    user: String,
    apt: bool,
    systemd: bool,
    installed: Vec<String>,
    nix_store: Option<String>,
    daemon_socket: bool,
}

/// Installs Nix on the node with apt, over `session` (as root): `apt-get
/// update` (an index that fails to download is an error, not a warning),
/// then `apt-get install --no-install-recommends` of [`NIX_PACKAGE`] (and
/// [`SYSTEMD_PACKAGE`] where systemd runs), keeping config files the node
/// already has, waiting up to 120 s for another apt or dpkg to finish. Does
/// nothing when the packages are installed.
pub async fn install_nix_with_apt(session: &SshSession) -> Result<AptReport, AptInstallError> {
    let node = node_name(session);
    let probe = probe_node(session, &node).await?;
    if probe.uid != "0" {
        return Err(AptInstallError::NotRoot {
            node,
            user: probe.user,
        });
    }
    if !probe.apt {
        return Err(AptInstallError::NoApt { node });
    }
    let has = |p: &str| probe.installed.iter().any(|i| i == p);
    if let Some(path) = probe.nix_store.clone().filter(|_| !has(NIX_PACKAGE)) {
        return Err(AptInstallError::ForeignNix { node, path });
    }
    let mut wanted = vec![NIX_PACKAGE];
    if probe.systemd {
        wanted.push(SYSTEMD_PACKAGE);
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|p| !has(p))
        .map(|p| (*p).to_owned())
        .collect();
    let (change, daemon_socket) = if missing.is_empty() {
        (AptChange::AlreadyInstalled, probe.daemon_socket)
    } else {
        let lock = format!("-o DPkg::Lock::Timeout={LOCK_TIMEOUT}");
        let update = format!("apt-get update -q {lock} -o APT::Update::Error-Mode=any");
        apt(session, &node, update).await?;
        let packages: Vec<String> = missing.iter().map(|p| quote(p)).collect();
        let install = format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {lock} \
             -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold {}",
            packages.join(" ")
        );
        apt(session, &node, install).await?;
        let after = probe_node(session, &node).await?;
        (AptChange::Installed(missing), after.daemon_socket)
    };
    Ok(AptReport {
        change,
        nix_version: nix_version(session, &node).await?,
        systemd: probe.systemd,
        daemon_socket,
    })
}

/// Finds out who we are on the node and what it has.
async fn probe_node(session: &SshSession, node: &str) -> Result<Probe, AptInstallError> {
    let packages = [NIX_PACKAGE, SYSTEMD_PACKAGE].map(quote).join(" ");
    let script = format!(
        "echo uid=$(id -u); echo user=$(id -un)\n\
         if command -v apt-get >/dev/null 2>&1; then echo apt=yes; fi\n\
         if [ -d /run/systemd/system ]; then echo systemd=yes; fi\n\
         for p in {packages}; do\n\
           if dpkg-query -W -f='${{Status}}' \"$p\" 2>/dev/null | grep -q 'ok installed'; then\n\
             echo installed=$p; fi; done\n\
         for n in \"$(command -v nix-store)\" /nix/var/nix/profiles/default/bin/nix-store; do\n\
           if [ -n \"$n\" ] && [ -x \"$n\" ]; then echo nix-store=$n; break; fi; done\n\
         if [ -S /nix/var/nix/daemon-socket/socket ]; then echo socket=yes; fi\n"
    );
    let text = probe(session, &script, Limits::DEFAULT).await?.stdout;
    parse_probe(&text).ok_or_else(|| AptInstallError::Node {
        node: node.to_owned(),
        detail: format!("unexpected answer to the probe for Nix and apt: {text:?}"),
    })
}

/// The probe's `key=value` lines; `None` without the uid.
fn parse_probe(text: &str) -> Option<Probe> {
    let mut p = Probe::default();
    for (key, value) in text.lines().filter_map(|l| l.split_once('=')) {
        let value = value.trim().to_owned();
        match key {
            "uid" => p.uid = value,
            "user" => p.user = value,
            "apt" => p.apt = true,
            "systemd" => p.systemd = true,
            "installed" => p.installed.push(value),
            "nix-store" => p.nix_store = Some(value),
            "socket" => p.daemon_socket = true,
            _ => {}
        }
    }
    (!p.uid.is_empty()).then_some(p)
}

/// Runs an apt command on the node, keeping only the end of its output
/// (stdout and stderr) for the error when it fails.
async fn apt(session: &SshSession, node: &str, command: String) -> Result<(), AptInstallError> {
    let script = format!(
        "out=$({command} 2>&1) || {{ rc=$?; printf '%s\\n' \"$out\" | tail -n {TAIL_LINES} >&2; \
         exit $rc; }}"
    );
    let out = probe(session, &script, Limits::DEFAULT).await?;
    if out.status.success() {
        return Ok(());
    }
    Err(AptInstallError::Apt {
        node: node.to_owned(),
        command,
        status: out.status.to_string(),
        output: out.stderr,
    })
}

/// The node's Nix version (`nix-store --version`'s last word).
async fn nix_version(session: &SshSession, node: &str) -> Result<String, AptInstallError> {
    let out = probe(session, "nix-store --version", Limits::DEFAULT).await?;
    match out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().last())
    {
        Some(version) if out.status.success() => Ok(version.to_owned()),
        _ => Err(AptInstallError::Node {
            node: node.to_owned(),
            detail: format!(
                "`nix-store --version` does not work after installing {NIX_PACKAGE} ({}): {}",
                out.status, out.stderr
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_reads_key_value_lines() {
        let p = parse_probe(
            "uid=0\nuser=root\napt=yes\ninstalled=nix-bin\nnix-store=/usr/bin/nix-store\n",
        )
        .unwrap();
        assert_eq!(
            p,
            Probe {
                uid: "0".into(),
                user: "root".into(),
                apt: true,
                systemd: false,
                installed: vec!["nix-bin".into()],
                nix_store: Some("/usr/bin/nix-store".into()),
                daemon_socket: false,
            }
        );
        assert_eq!(parse_probe("user=root\n"), None);
        assert_eq!(parse_probe(""), None);
    }
}
