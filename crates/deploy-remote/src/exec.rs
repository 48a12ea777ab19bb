//! Running one command on a node: by `/bin/sh` whatever the login shell
//! (see [`command_line`]), under a timeout on both ends (coreutils'
//! `timeout` on the node kills a hung command there; a deadline here
//! covers a dead link), its stdin fed from memory (where secrets and file
//! contents go, never into an argv), its stdout kept up to a cap and its
//! stderr up to deploy-ssh's bound.

use std::time::{Duration, Instant};

use deploy_ssh::{ExitStatus, SshError, SshSession};
use tokio::io::AsyncWriteExt;

use crate::shell::command_line;

/// How long a command may run and how much it may print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From the channel's opening to the exit status.
    pub timeout: Duration,
    /// The most bytes of stdout kept; more is an error.
    pub max_output: usize,
}

impl Limits {
    /// What every command gets unless it says otherwise: 10 minutes (apt,
    /// k3s's install script and a service restart fit), 4 MiB of stdout.
    pub const DEFAULT: Limits = Limits {
        timeout: Duration::from_secs(600),
        max_output: 4 << 20,
    };

    /// These limits with `timeout`.
    pub const fn with_timeout(self, timeout: Duration) -> Limits {
        Limits { timeout, ..self }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// What the deadline here adds to the node's own timeout, for the exit
/// status to come back.
const GRACE: Duration = Duration::from_secs(10);

/// Why a command on a node failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The SSH channel could not be used.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The command ran and failed.
    #[error("{node}: `{command}` failed ({status}): {stderr}")]
    Failed {
        /// The node.
        node: String,
        /// What ran.
        command: String,
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The command outlived its timeout (it was killed on the node, where
    /// `timeout` exists).
    #[error("{node}: `{command}` did not finish within {seconds} s and was stopped: check the node (is something holding a lock?), or allow more time")]
    TimedOut {
        /// The node.
        node: String,
        /// What ran.
        command: String,
        /// The timeout.
        seconds: u64,
    },
}

/// `user@host:port` of a session, for messages.
pub fn node_name(session: &SshSession) -> String {
    format!("{}@{}:{}", session.user(), session.host(), session.port())
}

/// Runs `script` on the node with the default [`Limits`]; its trimmed
/// stdout, or an error carrying its status and stderr.
pub async fn run(session: &SshSession, script: impl AsRef<str>) -> Result<String, CommandError> {
    let script = script.as_ref();
    let out = run_with(session, script, script, &[], Limits::DEFAULT).await?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Runs `script` on the node with `input` on its stdin, within `limits`;
/// its stdout, or an error naming `what` (a description, or the script).
pub async fn run_with(
    session: &SshSession,
    what: &str,
    script: &str,
    input: &[u8],
    limits: Limits,
) -> Result<Vec<u8>, CommandError> {
    let ended = execute(session, what, script, input, limits).await?;
    if !ended.fed || !ended.status.success() {
        return Err(CommandError::Failed {
            node: node_name(session),
            command: what.to_owned(),
            status: ended.status.to_string(),
            stderr: ended.stderr,
        });
    }
    Ok(ended.stdout)
}

/// How a [`probe`] ended and what it said (trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr (bounded).
    pub stderr: String,
}

/// Runs `script` (say, a check whose failure is an answer) and returns how
/// it ended and what it said, whether it succeeded or not; errors only
/// when it could not run or outlived `limits`.
pub async fn probe(
    session: &SshSession,
    script: &str,
    limits: Limits,
) -> Result<Probed, CommandError> {
    let ended = execute(session, script, script, &[], limits).await?;
    Ok(Probed {
        status: ended.status,
        stdout: String::from_utf8_lossy(&ended.stdout).trim().to_owned(),
        stderr: ended.stderr,
    })
}

/// How a command ended.
struct Ended {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    /// Whether all of the input went in.
    fed: bool,
}

/// Runs `script` within `limits`, feeding it `input`.
async fn execute(
    session: &SshSession,
    what: &str,
    script: &str,
    input: &[u8],
    limits: Limits,
) -> Result<Ended, CommandError> {
    let started = Instant::now();
    let timed_out = || CommandError::TimedOut {
        node: node_name(session),
        command: what.to_owned(),
        seconds: limits.timeout.as_secs().max(1),
    };
    let work = async {
        let mut process = session.exec(&command_line(script, limits.timeout)).await?;
        let monitor = process.monitor();
        // A command that exits without reading makes this fail: its status
        // and stderr say why.
        let fed = process.write_all(input).await.is_ok();
        let (status, stdout) = process.finish_bounded(limits.max_output).await?;
        Ok::<_, CommandError>(Ended {
            status,
            stdout,
            stderr: monitor.stderr_text(),
            fed,
        })
    };
    let ended = match tokio::time::timeout(limits.timeout + GRACE, work).await {
        Ok(r) => r?,
        Err(_) => return Err(timed_out()),
    };
    // `timeout` on the node says 124 (or 137 after its KILL).
    if matches!(ended.status, ExitStatus::Code(124 | 137)) && started.elapsed() >= limits.timeout {
        return Err(timed_out());
    }
    Ok(ended)
}
