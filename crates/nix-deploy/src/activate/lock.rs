//! One deploy per node at a time: an exclusive `flock` on
//! `<state dir>/lock` (see `PRINT_STATE_DIR`), taken by a shell on its own exec channel that then
//! waits on its stdin (`cat`). The lock lives as long as that channel:
//! releasing it sends EOF; a deployer that dies drops the connection,
//! sshd closes the channel, `cat` ends, and the kernel releases the lock,
//! so a dead deployer never leaves a stale lock. The holder writes who it
//! is to `<state dir>/lock.holder`, which a waiting deploy shows.

use std::time::Duration;

use deploy_ssh::{ProcessMonitor, ProcessStdio, SshSession};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{ActivationError, PRINT_STATE_DIR};
use crate::profile::{node_name, ProfileError};
use crate::shell::quote;

/// The node's lock, held until [`release`](Self::release) or until the
/// SSH session ends.
pub struct NodeLock {
    stdio: BufReader<ProcessStdio>,
    monitor: ProcessMonitor,
}

impl std::fmt::Debug for NodeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLock").finish_non_exhaustive()
    }
}

/// Who we are, for the lock's holder file.
fn whoami(session: &SshSession) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    format!(
        "deploy pid {} on {host} as {}",
        std::process::id(),
        session.user()
    )
}

/// Takes the node's lock, waiting up to `timeout` for another deploy to
/// release it; `on_wait` is called once with the holder's description if
/// it has to wait.
pub async fn acquire(
    session: &SshSession,
    timeout: Duration,
    mut on_wait: impl FnMut(&str),
) -> Result<NodeLock, ActivationError> {
    let holder = "\"$d/lock.holder\"";
    let secs = timeout.as_secs();
    let command = format!(
        "d=$({PRINT_STATE_DIR}); mkdir -p \"$d\" && exec 9>>\"$d/lock\" || exit 1; \
         if ! flock -n 9; then printf 'waiting %s\\n' \"$(cat {holder} 2>/dev/null)\"; \
         flock -w {secs} 9 || {{ printf 'timeout %s\\n' \"$(cat {holder} 2>/dev/null)\"; exit 75; }}; fi; \
         printf '%s\\n' {me} > {holder}; echo locked; exec cat >/dev/null",
        me = quote(&whoami(session)),
    );
    let (stdio, monitor) = session.exec(&command).await?.into_parts();
    let mut stdio = BufReader::new(stdio);
    let node = node_name(session);
    let failed = |monitor: &ProcessMonitor, command: &str, status: String| {
        ActivationError::from(ProfileError::Command {
            node: node.clone(),
            command: command.to_owned(),
            status,
            stderr: monitor.stderr_text(),
        })
    };
    let wait = async {
        loop {
            let mut line = String::new();
            let n = stdio
                .read_line(&mut line)
                .await
                .map_err(|e| failed(&monitor, "taking the node lock", e.to_string()))?;
            let line = line.trim_end();
            if n == 0 {
                let status = monitor.wait().await;
                return Err(failed(&monitor, &command, status.to_string()));
            }
            if line == "locked" {
                return Ok(());
            }
            if let Some(h) = line.strip_prefix("waiting ") {
                on_wait(h);
            } else if let Some(h) = line.strip_prefix("timeout ") {
                return Err(ActivationError::LockTimeout {
                    node: node.clone(),
                    holder: h.to_owned(),
                    seconds: secs,
                });
            }
        }
    };
    // The node enforces the timeout; this only guards against a node
    // that stops answering.
    match tokio::time::timeout(timeout + Duration::from_secs(30), wait).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ActivationError::LockTimeout {
                node: node.clone(),
                holder: "unknown (the node stopped answering)".to_owned(),
                seconds: secs,
            })
        }
    }
    Ok(NodeLock { stdio, monitor })
}

impl NodeLock {
    /// Releases the lock and waits until the node has let it go.
    pub async fn release(mut self) {
        if let Err(e) = self.stdio.get_mut().shutdown().await {
            tracing::debug!(error = %e, "releasing the node lock");
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.monitor.wait()).await;
    }
}
