//! Preparing a node (ConfigureVPS): finding out what the node has (Nix and
//! its version, whether a daemon serves the store, who we are there),
//! whether the daemon trusts that user), installing Nix when it has none
//! ([`crate::install`]: the `closure` or `apt` method), our settings in
//! the node's nix.conf, and making it trust the deployer's signing key.

use std::collections::BTreeMap;

use deploy_ssh::SshSession;
use nix_wire::signing::PublicKey;

use crate::install::{install, InstallError, Installed, NixInstall};
use crate::trust::{configure, Configured, TrustChange, TrustError};
use deploy_remote::{node_name, run, CommandError};

/// What a node has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The SSH user's name on the node.
    pub user: String,
    /// Whether that user is root.
    pub is_root: bool,
    /// `nix-store --version`'s version, if Nix is installed.
    pub nix_version: Option<String>,
    /// Whether a Nix daemon socket exists (a multi-user install).
    pub daemon_socket: bool,
    /// Whether Nix trusts the SSH user (root, or named in
    /// `trusted-users` directly, by `@group` or `*`); `None` without Nix.
    /// An untrusted user can only push signed paths.
    pub trusted: Option<bool>,
}

/// What [`prepare`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareReport {
    /// What the node has.
    pub facts: NodeFacts,
    /// What installing Nix did (`None`: the node had Nix already).
    pub installed: Option<Installed>,
    /// Whether nix.conf changed to trust our key (`None`: no key given).
    pub trusted_key: Option<TrustChange>,
    /// Whether our settings changed nix.conf (`None`: none given and none
    /// taken out).
    pub settings: Option<TrustChange>,
    /// Whether a running nix-daemon service was restarted to read the
    /// changed nix.conf.
    pub daemon_restarted: bool,
}

impl PrepareReport {
    /// Whether preparing changed anything on the node.
    pub fn changed(&self) -> bool {
        self.installed.as_ref().is_some_and(Installed::changed)
            || self.trusted_key == Some(TrustChange::Changed)
            || self.settings == Some(TrustChange::Changed)
    }
}

/// Why preparing failed.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Inspecting the node failed.
    #[error(transparent)]
    Inspect(#[from] CommandError),
    /// The node has no Nix, and no install method was given.
    #[error(
        "{node}: Nix is not installed (no nix-store on PATH) and no install method was given: \
         run `deploy prepare --nix-install closure`, or install Debian's nix-bin on the node \
         (apt-get install nix-bin), then run `deploy prepare` again"
    )]
    NixMissing {
        /// The node.
        node: String,
    },
    /// Installing Nix failed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// Nix was installed but SSH commands do not find it.
    #[error(
        "{node}: Nix was installed but `nix-store` is not on the PATH of SSH commands: \
         check that /usr/local/bin is on it (sshd's PATH, or ~/.ssh/environment)"
    )]
    NotOnPath {
        /// The node.
        node: String,
    },
    /// Trusting the key failed.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// Finds out what the node has.
pub async fn inspect(session: &SshSession) -> Result<NodeFacts, CommandError> {
    let out = run(
        session,
        "id -un; id -u; (nix-store --version 2>/dev/null || echo none) | head -n 1; \
         if [ -S /nix/var/nix/daemon-socket/socket ]; then echo socket; else echo none; fi; \
         printf '%s\\n' \"$(id -Gn)\"; \
         printf 'trusted-users %s\\n' \"$(nix --extra-experimental-features nix-command show-config 2>/dev/null \
           | sed -n 's/^trusted-users = //p')\""
            .to_owned(),
    )
    .await?;
    let lines: Vec<&str> = out.lines().collect();
    let [user, uid, nix, socket, groups, trusted_users] = lines[..] else {
        return Err(CommandError::Failed {
            node: node_name(session),
            command: "inspecting the node".to_owned(),
            status: "unexpected output".to_owned(),
            stderr: out.clone(),
        });
    };
    Ok(NodeFacts {
        user: user.to_owned(),
        is_root: uid == "0",
        nix_version: (nix != "none").then(|| nix.rsplit(' ').next().unwrap_or(nix).to_owned()),
        daemon_socket: socket == "socket",
        trusted: (nix != "none").then(|| {
            let list: Vec<&str> = trusted_users
                .trim_start_matches("trusted-users")
                .split_whitespace()
                .collect();
            uid == "0"
                || list.contains(&user)
                || list.contains(&"*")
                || groups
                    .split_whitespace()
                    .any(|g| list.contains(&format!("@{g}").as_str()))
        }),
    })
}

/// Inspects the node, installs Nix as `nix` says if it has none (refusing
/// such a node without `nix`), puts `settings` (all the inventory's; one
/// it set before and no longer has is taken out) in our block of its
/// nix.conf and (given `key`) makes it trust the deployer's key; a running
/// nix-daemon service is restarted if nix.conf changed. Running it again
/// changes nothing.
pub async fn prepare(
    session: &SshSession,
    key: Option<&PublicKey>,
    nix: Option<&NixInstall>,
    settings: &BTreeMap<String, String>,
) -> Result<PrepareReport, PrepareError> {
    let mut facts = inspect(session).await?;
    let mut installed = None;
    if facts.nix_version.is_none() {
        let node = node_name(session);
        let how = nix.ok_or_else(|| PrepareError::NixMissing { node: node.clone() })?;
        installed = Some(install(session, how, None).await?);
        facts = inspect(session).await?;
        if facts.nix_version.is_none() {
            return Err(PrepareError::NotOnPath { node });
        }
    }
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let Configured {
        settings,
        key: trusted_key,
    } = configure(session, &pairs, key).await?;
    let conf_changed = [settings, trusted_key].contains(&Some(TrustChange::Changed));
    let daemon_restarted = conf_changed && restart_daemon(session).await?;
    if conf_changed {
        facts = inspect(session).await?;
    }
    Ok(PrepareReport {
        facts,
        installed,
        trusted_key,
        settings,
        daemon_restarted,
    })
}

/// Restarts the nix-daemon service if systemd runs it; whether it did.
async fn restart_daemon(session: &SshSession) -> Result<bool, CommandError> {
    let out = run(
        session,
        "if [ -d /run/systemd/system ] && systemctl is-active --quiet nix-daemon.service; then \
         systemctl restart nix-daemon.service && echo restarted; fi"
            .to_owned(),
    )
    .await?;
    Ok(out == "restarted")
}
