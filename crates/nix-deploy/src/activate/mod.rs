//! Activation on the node, around the profile switch of
//! [`profile::switch`](crate::profile::switch):
//!
//! - [`generations`]: the profile's generations (read from Nix's
//!   `PROFILE-N-link` symlinks) and rolling back to the previous or a
//!   given one with `nix-env --switch-generation`;
//! - [`watchdog`]: the safe rollback: a detached timer on the node, armed
//!   before the switch, that goes back to the previous generation unless
//!   the deploy is confirmed over a fresh SSH connection in time;
//! - [`lock`]: one deploy per node at a time (`flock`, held by an exec
//!   channel, so a dead deployer never leaves a stale lock);
//! - [`path`]: the managed `/etc/profile.d/nix-deploy.sh` putting the
//!   profile's `bin` on login shells' PATH.
//!
//! Services do not rely on PATH: their units name programs by absolute
//! paths under the profile (e.g. `/nix/var/nix/profiles/nix-deploy/bin/k3s`),
//! so a switch or a rollback changes what they run at their next restart.

use deploy_ssh::SshError;

use deploy_remote::CommandError;

pub mod generations;
pub mod lock;
pub mod path;
pub mod watchdog;

/// Where nix-deploy keeps its state on nodes (the lock, watchdogs) when it
/// logs in as root.
pub const STATE_DIR: &str = "/nix/var/nix-deploy";

/// Shell code printing the state directory for the SSH user: [`STATE_DIR`]
/// for root, else `${XDG_STATE_HOME:-~/.local/state}/nix-deploy` (others
/// can't write `/nix/var`; their lock then orders only their own deploys).
/// Part of the commands that need it, so it costs no round trip of its own.
pub(crate) const PRINT_STATE_DIR: &str = "if [ \"$(id -u)\" = 0 ]; then echo /nix/var/nix-deploy; \
     else echo \"${XDG_STATE_HOME:-$HOME/.local/state}/nix-deploy\"; fi";

/// Why an activation step failed.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A command on the node could not run or failed (boxed: it is large).
    #[error(transparent)]
    Command(Box<CommandError>),
    /// The asked generation does not exist.
    #[error(
        "{node}: profile {profile} has no generation {wanted}; it has {}",
        list(existing)
    )]
    NoSuchGeneration {
        /// The node.
        node: String,
        /// The profile path.
        profile: String,
        /// The generation asked for.
        wanted: u64,
        /// The generations it has.
        existing: Vec<u64>,
    },
    /// Rolling back needs a generation older than the current one.
    #[error("{node}: profile {profile} has no generation before the current one ({})", current.map_or("none".to_owned(), |c| c.to_string()))]
    NoPreviousGeneration {
        /// The node.
        node: String,
        /// The profile path.
        profile: String,
        /// The current generation, if any.
        current: Option<u64>,
    },
    /// The node's answer could not be understood.
    #[error("{node}: unexpected output from `{what}`: {output:?}")]
    Unexpected {
        /// The node.
        node: String,
        /// What ran.
        what: String,
        /// What it printed.
        output: String,
    },
    /// Another deploy held the node's lock for the whole timeout.
    #[error(
        "{node}: another deploy holds the node's lock ({holder}); gave up after {} s",
        seconds
    )]
    LockTimeout {
        /// The node.
        node: String,
        /// Who holds it, as the holder recorded it.
        holder: String,
        /// How long we waited.
        seconds: u64,
    },
    /// A later deploy took the node over (or the profile was switched by
    /// hand) before this deploy was confirmed.
    #[error("{node}: not confirmed: another deploy took the node over before this one confirmed; the node keeps what that deploy left (see `deploy generations`)")]
    Superseded {
        /// The node.
        node: String,
    },
    /// The watchdog acted before the confirmation arrived.
    #[error("{node}: confirmation came too late: the node's watchdog had already rolled back to generation {generation}")]
    TooLate {
        /// The node.
        node: String,
        /// The generation it went back to.
        generation: u64,
    },
}

impl From<CommandError> for ActivationError {
    fn from(e: CommandError) -> Self {
        ActivationError::Command(Box::new(e))
    }
}

impl From<SshError> for ActivationError {
    fn from(e: SshError) -> Self {
        CommandError::from(e).into()
    }
}

fn list(numbers: &[u64]) -> String {
    if numbers.is_empty() {
        return "none".to_owned();
    }
    numbers
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
