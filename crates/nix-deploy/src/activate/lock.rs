//! One deploy per node at a time: an exclusive `flock` on
//! `<state dir>/lock` (see `PRINT_STATE_DIR`), taken by a shell on its own exec channel that then
//! waits on its stdin (`cat`). The lock lives as long as that channel:
//! releasing it sends EOF; a deployer that dies drops the connection,
//! sshd closes the channel, `cat` ends, and the kernel releases the lock,
//! so a dead deployer never leaves a stale lock. The holder writes who it
//! is to `<state dir>/lock.holder`, which a waiting deploy shows.
//!
//! Taking the lock also supersedes the watchdogs that dead deployers left
//! pending (see [`super::watchdog`]): whoever holds the lock is about to
//! change the profile, so they must not roll it back later. Their
//! `previous` generations are handed to the new holder
//! ([`NodeLock::inherited`]).

use std::time::Duration;

use deploy_ssh::{ProcessMonitor, ProcessStdio, SshSession};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{ActivationError, PRINT_STATE_DIR};
use deploy_remote::{node_name, quote, CommandError};

/// The lock file's name in the state directory.
pub(crate) const LOCK_FILE: &str = "lock";

/// The file in the state directory naming the lock's holder.
pub(crate) const HOLDER_FILE: &str = "lock.holder";

/// Shell code, run under the lock with `$d` the state directory: claims the
/// decision of every pending watchdog (`superseded`), stops its timer, and
/// prints `inherit N` with the generation it would have gone back to.
/// Decided watchdogs older than a week are removed.
const SUPERSEDE: &str = "for w in \"$d\"/watchdogs/*/; do [ -d \"$w\" ] || continue; \
     if mkdir \"$w/decided\" 2>/dev/null; then echo superseded > \"$w/state\"; \
     [ -f \"$w/unit\" ] && systemctl stop \"$(cat \"$w/unit\").timer\" >/dev/null 2>&1; \
     printf 'inherit %s\\n' \"$(cat \"$w/previous\" 2>/dev/null)\"; fi; done; \
     find \"$d/watchdogs\" -mindepth 1 -maxdepth 1 -mtime +7 -exec rm -rf {} + 2>/dev/null";

/// The node's lock, held until [`release`](Self::release) or until the
/// SSH session ends.
pub struct NodeLock {
    stdio: BufReader<ProcessStdio>,
    monitor: ProcessMonitor,
    inherited: Option<u64>,
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
    let holder = format!("\"$d/{HOLDER_FILE}\"");
    let secs = timeout.as_secs();
    let command = format!(
        "d=$({PRINT_STATE_DIR}); mkdir -p \"$d\" && exec 9>>\"$d/{LOCK_FILE}\" || exit 1; \
         if ! flock -n 9; then printf 'waiting %s\\n' \"$(cat {holder} 2>/dev/null)\"; \
         flock -w {secs} 9 || {{ printf 'timeout %s\\n' \"$(cat {holder} 2>/dev/null)\"; exit 75; }}; fi; \
         printf '%s\\n' {me} > {holder}; {SUPERSEDE}; echo locked; exec cat >/dev/null",
        me = quote(&whoami(session)),
    );
    let (stdio, monitor) = session.exec(&command).await?.into_parts();
    let mut stdio = BufReader::new(stdio);
    let node = node_name(session);
    let failed = |monitor: &ProcessMonitor, command: &str, status: String| {
        ActivationError::from(CommandError::Failed {
            node: node.clone(),
            command: command.to_owned(),
            status,
            stderr: monitor.stderr_text(),
        })
    };
    let mut inherited = None;
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
            if let Some(n) = line.strip_prefix("inherit ") {
                if let Ok(n) = n.parse::<u64>() {
                    inherited = Some(inherited.map_or(n, |i: u64| i.min(n)));
                }
                continue;
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
    Ok(NodeLock {
        stdio,
        monitor,
        inherited,
    })
}

impl NodeLock {
    /// The generation that watchdogs superseded by taking the lock would
    /// have gone back to (the oldest, if several): the last generation a
    /// deploy confirmed, where a dead deployer's unconfirmed one is current.
    pub fn inherited(&self) -> Option<u64> {
        self.inherited
    }

    /// Releases the lock and waits until the node has let it go.
    pub async fn release(mut self) {
        if let Err(e) = self.stdio.get_mut().shutdown().await {
            tracing::debug!(error = %e, "releasing the node lock");
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.monitor.wait()).await;
    }
}
