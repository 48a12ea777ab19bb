//! The node's profile: reading which closure it points to, and switching it
//! to a new one as a new generation with `nix-env --profile P --set`, whose
//! semantics users know (the link is replaced in one rename; old
//! generations stay as GC roots). Run over the node's SSH session while the
//! copy's temp roots still hold the closure.

use deploy_ssh::{SshError, SshSession};
use nix_wire::StorePath;
use tokio::io::AsyncWriteExt;

use crate::shell::quote;

/// Why reading or switching a profile failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The SSH command could not run.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The command ran and failed.
    #[error("{node}: `{command}` failed ({status}): {stderr}")]
    Command {
        /// The node.
        node: String,
        /// What ran.
        command: String,
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The profile points somewhere unexpected.
    #[error("{node}: profile {profile} points to {target:?}, which is not a store path")]
    NotAStorePath {
        /// The node.
        node: String,
        /// The profile path.
        profile: String,
        /// Where it points.
        target: String,
    },
}

/// `user@host:port` of a session, for messages.
pub(crate) fn node_name(session: &SshSession) -> String {
    format!("{}@{}:{}", session.user(), session.host(), session.port())
}

/// Runs `command` on the node; its trimmed stdout, or an error carrying
/// its status and stderr.
pub(crate) async fn run(session: &SshSession, command: String) -> Result<String, ProfileError> {
    let out = run_with_input(session, &command, &command, &[]).await?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Runs `command` on the node with `input` on its stdin (where secrets and
/// file contents go, never into an argv); its stdout, or an error naming
/// `what` with the status and stderr.
pub(crate) async fn run_with_input(
    session: &SshSession,
    what: &str,
    command: &str,
    input: &[u8],
) -> Result<Vec<u8>, ProfileError> {
    let mut process = session.exec(command).await?;
    let monitor = process.monitor();
    // A command that exits without reading makes this fail: its status and
    // stderr say why.
    let sent = process.write_all(input).await;
    let (status, stdout) = process.finish().await?;
    if sent.is_err() || !status.success() {
        return Err(ProfileError::Command {
            node: node_name(session),
            command: what.to_owned(),
            status: status.to_string(),
            stderr: monitor.stderr_text(),
        });
    }
    Ok(stdout)
}

/// The store path the profile at `profile` points to now, `None` if the
/// node has no such profile yet.
pub async fn current(
    session: &SshSession,
    profile: &str,
) -> Result<Option<StorePath>, ProfileError> {
    let target = run(
        session,
        format!(
            "if [ -e {p} ]; then readlink -f {p}; fi",
            p = quote(profile)
        ),
    )
    .await?;
    if target.is_empty() {
        return Ok(None);
    }
    StorePath::parse(&target)
        .map(Some)
        .map_err(|_| ProfileError::NotAStorePath {
            node: node_name(session),
            profile: profile.to_owned(),
            target,
        })
}

/// Makes `closure` the profile's new generation (nothing happens when it
/// is the current one already).
pub async fn switch(
    session: &SshSession,
    profile: &str,
    closure: &StorePath,
) -> Result<(), ProfileError> {
    if current(session, profile).await?.as_ref() == Some(closure) {
        return Ok(());
    }
    run(
        session,
        format!(
            "nix-env --profile {} --set {}",
            quote(profile),
            quote(&closure.to_string())
        ),
    )
    .await
    .map(drop)
}
