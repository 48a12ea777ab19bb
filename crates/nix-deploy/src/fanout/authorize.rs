//! The node-to-node credential: a relay's public key in the target's
//! `~/.ssh/authorized_keys` for one deploy, as little as it needs:
//!
//! ```text
//! restrict,from="10.0.0.2",expiry-time="20261205103000",command="nix-daemon --stdio" ssh-ed25519 AAAA… nix-deploy-relay
//! ```
//!
//! `restrict` (no forwarding, no pty), only from the relay's address, only
//! the daemon command whatever the relay asks, and refused by sshd after
//! its expiry (in the node's own time zone, as sshd reads it) even if the
//! deploy is killed before it removes the line. Each change rewrites the
//! file whole (a temporary file renamed over it, under `flock`), drops our
//! lines that expired, and keeps every other line byte for byte.

use std::net::IpAddr;
use std::time::Duration;

use deploy_remote::{quote, CommandError, Limits};
use deploy_ssh::{PublicKey, SshSession};

use super::protocol::KEY_COMMENT;

/// Why a key can't be authorized.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// What the relay sent is not a public key.
    #[error("the relay's key is not an OpenSSH public key: {0}")]
    Key(String),
    /// The source address is not an IP address.
    #[error("the relay's source address {0:?} is not an IP address")]
    Source(String),
    /// The daemon command can't go into an authorized_keys option.
    #[error("the daemon command {0:?} can't be forced by authorized_keys (it holds a quote, a backslash or a line break)")]
    Command(String),
    /// Editing the file failed.
    #[error(transparent)]
    Edit(#[from] Box<CommandError>),
}

/// A relay key authorized on a node; [`Authorization::revoke`] removes it
/// (else it expires by itself).
#[derive(Debug)]
pub struct Authorization {
    /// The key as written (type and base64), which finds its line.
    key: String,
}

/// The shell function shared by both edits: rewrites authorized_keys under
/// a lock, without our expired lines and without the lines `awk` drops.
const REWRITE: &str = r#"set -eu
umask 077
dir="$HOME/.ssh"; file="$dir/authorized_keys"
mkdir -p "$dir"
if [ -L "$file" ]; then echo "$file is a symbolic link: not rewritten" >&2; exit 1; fi
exec 9>>"$file"
flock -w 30 9
now=$(date +%Y%m%d%H%M%S)
tmp="$file.nix-deploy.$$"
trap 'rm -f "$tmp"' EXIT
awk -v now="$now" -v drop="$drop" -v comment="$comment" '
  index($0, " " comment) && match($0, /expiry-time="[0-9]+"/) && substr($0, RSTART + 13, RLENGTH - 14) < now { next }
  drop != "" && index($0, drop) { next }
  { print }' "$file" > "$tmp"
"#;

impl Authorization {
    /// Authorizes `key` on the node of `session` for `lifetime`, from
    /// `source` only, forced to `command`.
    pub async fn grant(
        session: &SshSession,
        key: &str,
        source: &str,
        command: &str,
        lifetime: Duration,
    ) -> Result<Self, AuthorizeError> {
        let line = entry_parts(key, source, command)?;
        let script = format!(
            "drop=''; comment={comment}\n{REWRITE}\
             expiry=$(date -d \"@$(( $(date +%s) + {secs} ))\" +%Y%m%d%H%M%S)\n\
             printf '%s\\n' {options}\"$expiry\"{rest} >> \"$tmp\"\n\
             mv -f \"$tmp\" \"$file\"\n",
            comment = quote(KEY_COMMENT),
            secs = lifetime.as_secs().max(1),
            options = quote(&line.options_before_expiry),
            rest = quote(&line.after_expiry),
        );
        let what = "authorizing the fan-out relay's key in ~/.ssh/authorized_keys";
        deploy_remote::run_with(session, what, &script, &[], limits())
            .await
            .map_err(Box::new)?;
        Ok(Authorization { key: line.key })
    }

    /// Removes the key (and any of ours that expired).
    pub async fn revoke(self, session: &SshSession) -> Result<(), CommandError> {
        let script = format!(
            "drop={drop}; comment={comment}\n{REWRITE}mv -f \"$tmp\" \"$file\"\n",
            drop = quote(&format!(" {} ", self.key)),
            comment = quote(KEY_COMMENT),
        );
        let what = "removing the fan-out relay's key from ~/.ssh/authorized_keys";
        deploy_remote::run_with(session, what, &script, &[], limits())
            .await
            .map(drop)
    }
}

fn limits() -> Limits {
    Limits::DEFAULT.with_timeout(Duration::from_secs(60))
}

/// An authorized_keys line, split around its expiry time.
#[derive(Debug, PartialEq, Eq)]
struct EntryParts {
    /// `restrict,from="…",expiry-time="` (the time follows).
    options_before_expiry: String,
    /// `",command="…" ssh-ed25519 AAAA… nix-deploy-relay`.
    after_expiry: String,
    /// `ssh-ed25519 AAAA…`.
    key: String,
}

/// Checks what goes into the line: the key re-encoded from its parsed
/// form, the source as an IP address, the command free of what would end
/// its quotes.
fn entry_parts(key: &str, source: &str, command: &str) -> Result<EntryParts, AuthorizeError> {
    let parsed =
        PublicKey::from_openssh(key.trim()).map_err(|e| AuthorizeError::Key(e.to_string()))?;
    let openssh = parsed
        .to_openssh()
        .map_err(|e| AuthorizeError::Key(e.to_string()))?;
    // Type and base64 only, whatever comment it had.
    let mut fields = openssh.split(' ');
    let encoded = match (fields.next(), fields.next()) {
        (Some(kind), Some(blob)) => format!("{kind} {blob}"),
        _ => return Err(AuthorizeError::Key(openssh.clone())),
    };
    let ip: IpAddr = source
        .parse()
        .map_err(|_| AuthorizeError::Source(source.to_owned()))?;
    if command.contains(['"', '\\', '\n', '\r']) {
        return Err(AuthorizeError::Command(command.to_owned()));
    }
    Ok(EntryParts {
        options_before_expiry: format!("restrict,from=\"{ip}\",expiry-time=\""),
        after_expiry: format!("\",command=\"{command}\" {encoded} {KEY_COMMENT}"),
        key: encoded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn the_line_is_restricted_to_the_source_the_command_and_the_key() {
        let parts = entry_parts(
            &format!("{KEY} nix-deploy-relay"),
            "10.0.0.2",
            "nix-daemon --stdio",
        )
        .unwrap();
        assert_eq!(
            format!("{}20261205103000{}", parts.options_before_expiry, parts.after_expiry),
            format!("restrict,from=\"10.0.0.2\",expiry-time=\"20261205103000\",command=\"nix-daemon --stdio\" {KEY} nix-deploy-relay")
        );
        assert_eq!(parts.key, KEY);
    }

    #[test]
    fn hostile_keys_sources_and_commands_are_refused() {
        let ok = |k: &str, s: &str, c: &str| entry_parts(k, s, c).is_ok();
        assert!(!ok(
            "ssh-ed25519 AAAA\nssh-rsa x",
            "10.0.0.2",
            "nix-daemon --stdio"
        ));
        assert!(!ok(
            &format!("command=\"sh\" {KEY}"),
            "10.0.0.2",
            "nix-daemon --stdio"
        ));
        assert!(!ok(KEY, "10.0.0.2\",command=\"sh", "nix-daemon --stdio"));
        assert!(!ok(KEY, "*", "nix-daemon --stdio"));
        assert!(!ok(KEY, "10.0.0.2", "nix-daemon --stdio\" ssh-ed25519 x"));
        assert!(ok(KEY, "fd00::2", "sudo nix-daemon --stdio"));
    }
}
