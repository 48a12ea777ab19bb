//! Files the deploy owns on a node: written through the command's stdin
//! (so their content, secrets included, is never in an argv), atomically
//! (a temporary file beside it, then a rename), and only when the content
//! differs, so reruns change nothing.

use deploy_ssh::{SshError, SshSession};
use tokio::io::AsyncWriteExt;

use crate::profile::{node_name, run, ProfileError};
use crate::shell::quote;

/// Writes `content` to `path` on the node with `mode`, creating its
/// directory; returns whether the file changed.
pub async fn write_if_changed(
    session: &SshSession,
    path: &str,
    mode: u32,
    content: &[u8],
) -> Result<bool, ProfileError> {
    let file = quote(path);
    let tmp = quote(&format!("{path}.nix-deploy-tmp"));
    let command = format!(
        "set -e; umask 077; mkdir -p \"$(dirname {file})\"; cat > {tmp}; chmod {mode:o} {tmp}; \
         if cmp -s {tmp} {file}; then rm -f {tmp}; chmod {mode:o} {file}; echo same; \
         else mv -f {tmp} {file}; echo changed; fi"
    );
    let failed = |status: String, stderr: String| ProfileError::Command {
        node: node_name(session),
        command: format!("writing {path}"),
        status,
        stderr,
    };
    let mut process = session.exec(&command).await?;
    let monitor = process.monitor();
    if let Err(source) = process.write_all(content).await {
        // The command may have died early: its status and stderr say why.
        let (status, _) = process.finish().await?;
        if !status.success() {
            return Err(failed(status.to_string(), monitor.stderr_text()));
        }
        return Err(SshError::Io {
            node: node_name(session),
            command: format!("writing {path}"),
            source,
        }
        .into());
    }
    let (status, stdout) = process.finish().await?;
    if !status.success() {
        return Err(failed(status.to_string(), monitor.stderr_text()));
    }
    Ok(String::from_utf8_lossy(&stdout).trim() == "changed")
}

/// Removes `paths` on the node (missing ones are fine).
pub async fn remove(session: &SshSession, paths: &[String]) -> Result<(), ProfileError> {
    if paths.is_empty() {
        return Ok(());
    }
    let words: Vec<String> = paths.iter().map(|p| quote(p)).collect();
    run(session, format!("rm -f {}", words.join(" "))).await?;
    Ok(())
}
