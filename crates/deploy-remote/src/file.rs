//! Files the deploy owns on a node: written through the command's stdin
//! (so their content, secrets included, is never in an argv), atomically
//! (a temporary file beside it, then a rename), and only when the content
//! differs, so reruns change nothing.

use deploy_ssh::SshSession;

use crate::exec::{run, run_with, CommandError, Limits};
use crate::shell::quote;

/// Writes `content` to `path` on the node with `mode`, creating its
/// directory; returns whether the file changed.
pub async fn write_if_changed(
    session: &SshSession,
    path: &str,
    mode: u32,
    content: &[u8],
) -> Result<bool, CommandError> {
    let file = quote(path);
    let tmp = quote(&format!("{path}.nix-deploy-tmp"));
    let command = format!(
        "set -e; umask 077; mkdir -p \"$(dirname {file})\"; cat > {tmp}; chmod {mode:o} {tmp}; \
         if cmp -s {tmp} {file}; then rm -f {tmp}; chmod {mode:o} {file}; echo same; \
         else mv -f {tmp} {file}; echo changed; fi"
    );
    let what = format!("writing {path}");
    let out = run_with(session, &what, &command, content, Limits::DEFAULT).await?;
    Ok(String::from_utf8_lossy(&out).trim() == "changed")
}

/// Removes `paths` on the node (missing ones are fine).
pub async fn remove(session: &SshSession, paths: &[String]) -> Result<(), CommandError> {
    if paths.is_empty() {
        return Ok(());
    }
    let words: Vec<String> = paths.iter().map(|p| quote(p)).collect();
    run(session, &format!("rm -f {}", words.join(" "))).await?;
    Ok(())
}
