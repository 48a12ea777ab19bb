//! The node's profile: reading which closure it points to, and switching it
//! to a new one as a new generation with `nix-env --profile P --set`, whose
//! semantics users know (the link is replaced in one rename; old
//! generations stay as GC roots). Run over the node's SSH session while the
//! copy's temp roots still hold the closure.

use deploy_remote::{node_name, quote, run, CommandError};
use deploy_ssh::{SshError, SshSession};
use nix_wire::StorePath;

/// Why reading or switching a profile failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A command on the node failed.
    #[error(transparent)]
    Command(#[from] CommandError),
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

impl From<SshError> for ProfileError {
    fn from(e: SshError) -> Self {
        ProfileError::Command(e.into())
    }
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
    .await?;
    Ok(())
}
