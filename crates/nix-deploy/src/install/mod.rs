//! Installing Nix on a node that has none (ConfigureVPS's install step).
//!
//! The `closure` method needs no Nix and no network on the node: the Nix
//! package's closure comes from the deployer's own store (the flake pins
//! it), and is installed the way the official multi-user installer does it:
//!
//! 1. the `nixbld` group and its 32 build users, `/nix/var/...`, and
//!    `/nix/store` (root:nixbld, 1775);
//! 2. the paths the node lacks, streamed as one tar archive made from our
//!    own NAR reader (see `stream`) into `tar -x` over an SSH exec
//!    channel, unpacked beside the store with Nix's canonical metadata
//!    (read-only, mtime 1, root) and moved in one rename each once the
//!    whole stream has checked out against the local NAR hashes;
//! 3. registration with the unpacked Nix: `nix-store --load-db` fed the
//!    `.reginfo` text for the paths it does not know yet;
//! 4. `build-users-group = nixbld` in our block of `/etc/nix/nix.conf`
//!    (the user's lines are kept);
//! 5. the default profile (`nix-env --profile
//!    /nix/var/nix/profiles/default --install NIX`), and each of its
//!    commands linked into `/usr/local/bin`, which is on the PATH sshd
//!    gives non-interactive commands (our deploys run `nix-daemon --stdio`
//!    that way);
//! 6. with systemd, a `nix-daemon.service` unit, enabled and started.
//!
//! Each step skips what is done already, so an interrupted install can be
//! run again. The `apt` method (Debian's `nix-bin`) is not written yet.

mod error;
mod node;
pub mod reginfo;
mod stream;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use deploy_ssh::SshSession;
use nix_wire::daemon::{DaemonClient, PathInfo};
use nix_wire::store_path::STORE_DIR;
use nix_wire::StorePath;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::UnboundedSender;

use crate::apt_install::{install_nix_with_apt, AptChange, AptReport};
use crate::closure::closure_infos;
use crate::trust::{set_settings, TrustChange};
use deploy_remote::node_name;
pub use error::InstallError;
pub use node::{DaemonService, BUILD_GROUP, BUILD_USERS, DAEMON_UNIT, DEFAULT_PROFILE};
pub use stream::LocalError;
use stream::StreamError;

/// How Nix gets onto a node that has none (the inventory's `nix.install`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InstallMethod {
    /// Push the Nix package's closure from the deployer's store.
    #[default]
    Closure,
    /// Install Debian's `nix-bin` with apt (not implemented yet).
    Apt,
}

impl InstallMethod {
    /// The spellings the inventory and the CLI accept.
    pub const ALLOWED: &'static [&'static str] = &["closure", "apt"];

    /// The inventory's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallMethod::Closure => "closure",
            InstallMethod::Apt => "apt",
        }
    }

    /// Parses the inventory's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "closure" => Some(InstallMethod::Closure),
            "apt" => Some(InstallMethod::Apt),
            _ => None,
        }
    }
}

/// What to install on a node without Nix, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NixInstall {
    /// The `closure` method with this (built) Nix package.
    Closure {
        /// The Nix package's store path in the deployer's store.
        package: StorePath,
    },
    /// The `apt` method.
    Apt,
}

/// The steps of an install, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallStep {
    /// Asking what the node has.
    Inspect,
    /// Build users and directories.
    Setup,
    /// Streaming and unpacking the missing paths.
    Unpack,
    /// `nix-store --load-db`.
    Register,
    /// nix.conf, the default profile and the command links.
    Configure,
    /// The systemd unit.
    Service,
}

/// Progress of an install, in order of occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallEvent {
    /// A step starts.
    Step(InstallStep),
    /// The closure is known and the node was asked which paths it has.
    Planned {
        /// Paths in the closure.
        closure_paths: usize,
        /// Paths to send.
        missing_paths: usize,
        /// Their NAR bytes.
        missing_bytes: u64,
    },
    /// A path went into the stream.
    PathSent {
        /// The path.
        path: StorePath,
        /// Its NAR size.
        nar_size: u64,
    },
}

/// What [`install_closure`] did; all zero, false and unchanged when Nix
/// was installed already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The installed Nix package.
    pub package: StorePath,
    /// Paths in its closure.
    pub closure_paths: usize,
    /// Paths sent and unpacked.
    pub sent_paths: usize,
    /// Their NAR bytes.
    pub sent_bytes: u64,
    /// Paths registered with `nix-store --load-db`.
    pub registered_paths: usize,
    /// Build users created.
    pub build_users_created: usize,
    /// Whether our block of nix.conf changed.
    pub nix_conf: TrustChange,
    /// Whether the default profile was created.
    pub profile_created: bool,
    /// Commands linked into `/usr/local/bin`.
    pub linked_commands: Vec<String>,
    /// What became of the nix-daemon service.
    pub service: DaemonService,
    /// Wall-clock time of the install.
    pub elapsed: Duration,
}

impl InstallReport {
    /// Whether the install changed anything on the node.
    pub fn changed(&self) -> bool {
        self.sent_paths > 0
            || self.registered_paths > 0
            || self.build_users_created > 0
            || self.nix_conf == TrustChange::Changed
            || self.profile_created
            || !self.linked_commands.is_empty()
            || matches!(
                self.service,
                DaemonService::Installed | DaemonService::Started
            )
    }
}

/// Where events go; a closed receiver is ignored.
#[derive(Clone, Default)]
pub(crate) struct Events(Option<UnboundedSender<InstallEvent>>);

impl Events {
    fn send(&self, event: InstallEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}

/// Installs the Nix `package` (its closure read from `local`, the
/// deployer's store) on the node behind `session`, which must be a root
/// session. Running it again on a node where it completed changes nothing.
pub async fn install_closure<S>(
    session: &SshSession,
    local: &mut DaemonClient<S>,
    package: &StorePath,
    events: Option<UnboundedSender<InstallEvent>>,
) -> Result<InstallReport, InstallError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let start = Instant::now();
    let events = Events(events);
    let infos = closure_infos(local, std::slice::from_ref(package)).await?;
    let paths: Vec<&StorePath> = infos.keys().collect();

    events.send(InstallEvent::Step(InstallStep::Inspect));
    let probe = node::probe(session, &paths).await?;
    if !probe.root {
        return Err(InstallError::NotRoot {
            node: node_name(session),
            user: session.user().to_owned(),
        });
    }
    events.send(InstallEvent::Step(InstallStep::Setup));
    let build_users_created = node::setup(session).await?;
    if !probe.unverified.is_empty() {
        node::remove_unverified(session, &probe.unverified).await?;
    }

    let missing: Vec<PathInfo> = infos
        .values()
        .filter(|i| !probe.present.iter().any(|p| p == i.path.base_name()))
        .cloned()
        .collect();
    events.send(InstallEvent::Planned {
        closure_paths: infos.len(),
        missing_paths: missing.len(),
        missing_bytes: missing.iter().map(|i| i.nar_size).sum(),
    });
    let sent_paths = missing.len();
    let sent_bytes = if missing.is_empty() {
        0
    } else {
        events.send(InstallEvent::Step(InstallStep::Unpack));
        let sent: Vec<StorePath> = missing.iter().map(|i| i.path.clone()).collect();
        let bytes = unpack(session, missing, &events).await?;
        node::commit(session, &sent.iter().collect::<Vec<_>>()).await?;
        bytes
    };

    events.send(InstallEvent::Step(InstallStep::Register));
    let invalid = node::invalid_paths(session, package, &paths).await?;
    let unregistered: Vec<&PathInfo> = infos
        .values()
        .filter(|i| invalid.contains(&i.path.to_absolute()))
        .collect();
    if !unregistered.is_empty() {
        node::load_db(
            session,
            package,
            &reginfo::reginfo(unregistered.iter().copied()),
        )
        .await?;
    }

    events.send(InstallEvent::Step(InstallStep::Configure));
    let nix_conf = set_settings(session, &[("build-users-group", BUILD_GROUP)]).await?;
    let profile_created = node::default_profile(session, package).await?;
    let linked_commands = node::link_commands(session, package).await?;
    let service = if probe.systemd {
        events.send(InstallEvent::Step(InstallStep::Service));
        node::daemon_service(session, nix_conf == TrustChange::Changed).await?
    } else {
        DaemonService::NoSystemd
    };
    Ok(InstallReport {
        package: package.clone(),
        closure_paths: infos.len(),
        sent_paths,
        sent_bytes,
        registered_paths: unregistered.len(),
        build_users_created,
        nix_conf,
        profile_created,
        linked_commands,
        service,
        elapsed: start.elapsed(),
    })
}

/// Streams `missing` into the node's `tar -x` (into the staging directory).
async fn unpack(
    session: &SshSession,
    missing: Vec<PathInfo>,
    events: &Events,
) -> Result<u64, InstallError> {
    let mut process = session.exec(&node::unpack_command()).await?;
    let monitor = process.monitor();
    let sent = match stream::send_tar(missing, PathBuf::from(STORE_DIR), &mut process, events).await
    {
        // Dropping the channel stops the node's tar; nothing leaves the
        // staging directory.
        Err(StreamError::Local(e)) => return Err(e.into()),
        Err(StreamError::Remote(e)) => Err(e),
        Ok(bytes) => Ok(bytes),
    };
    let (status, _) = process.finish().await?;
    match sent {
        Ok(bytes) if status.success() => Ok(bytes),
        other => {
            let mut stderr = monitor.stderr_text();
            if let (true, Err(e)) = (stderr.is_empty(), other) {
                stderr = e.to_string();
            }
            Err(InstallError::Command {
                node: node_name(session),
                step: "unpacking the Nix closure (tar -x)",
                status: status.to_string(),
                stderr,
            })
        }
    }
}

/// What an install did, by method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The `closure` method.
    Closure(InstallReport),
    /// The `apt` method.
    Apt(AptReport),
}

impl Installed {
    /// Whether the install changed anything on the node.
    pub fn changed(&self) -> bool {
        match self {
            Installed::Closure(r) => r.changed(),
            Installed::Apt(r) => r.change != AptChange::AlreadyInstalled,
        }
    }
}

/// Installs Nix as `how` says, on the node behind the root `session`; the
/// `closure` method reads the package's closure from the deployer's store
/// (its daemon, or a spawned `nix-daemon --stdio`), the `apt` method runs
/// the node's apt.
pub async fn install(
    session: &SshSession,
    how: &NixInstall,
    events: Option<UnboundedSender<InstallEvent>>,
) -> Result<Installed, InstallError> {
    match how {
        NixInstall::Apt => Ok(Installed::Apt(install_nix_with_apt(session).await?)),
        NixInstall::Closure { package } => {
            let transport = nix_wire::daemon::connect_local().await?;
            let mut local = DaemonClient::connect(transport, Default::default()).await?;
            let report = install_closure(session, &mut local, package, events).await?;
            Ok(Installed::Closure(report))
        }
    }
}
