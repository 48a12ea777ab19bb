//! Making a node trust the deployer's signing key: its public key is added
//! to `extra-trusted-public-keys` in `/etc/nix/nix.conf`, inside our marked
//! block (`# BEGIN nix-deploy` … `# END nix-deploy`). `extra-` appends to
//! the default (cache.nixos.org's key stays trusted); Nix 2.8 and 2.26 both
//! honour it. The user's other lines are kept byte for byte, and a second
//! run writes nothing. Nothing is restarted: the node's `nix-daemon` reads
//! nix.conf when it starts, so restart it after a [`TrustChange::Changed`].
//! The same block holds the other settings we manage ([`set_settings`],
//! e.g. `build-users-group` after installing Nix).

use deploy_ssh::{SshError, SshSession};
use nix_wire::signing::PublicKey;

use crate::profile::{run_with_input, ProfileError};
use crate::shell::quote;

/// The node's Nix configuration file.
pub const NIX_CONF: &str = "/etc/nix/nix.conf";
/// First line of our block.
pub const BEGIN: &str = "# BEGIN nix-deploy";
/// Last line of our block.
pub const END: &str = "# END nix-deploy";
const SETTING: &str = "extra-trusted-public-keys";

/// Why the key could not be added.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Editing nix.conf needs root.
    #[error("{node}: editing {NIX_CONF} needs root; connect as root (sshUser = \"root\")")]
    NotRoot {
        /// The node.
        node: String,
    },
    /// The SSH command could not run.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A command ran and failed.
    #[error("{node}: {what} failed ({status}): {stderr}")]
    Command {
        /// The node.
        node: String,
        /// What we were doing.
        what: &'static str,
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// nix.conf is not UTF-8 or has a block we cannot edit.
    #[error("{node}: {NIX_CONF}: {reason}")]
    BadConfig {
        /// The node.
        node: String,
        /// What is wrong.
        reason: String,
    },
}

/// What [`trust_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustChange {
    /// The key was already trusted through our block; nothing was written.
    Unchanged,
    /// nix.conf was rewritten; restart the node's daemon to apply it.
    Changed,
}

/// `config` with our block's lines (each ending in a newline) changed by
/// `edit`: the block is appended if missing; lines outside it are kept
/// byte for byte.
fn edit_block(config: &str, edit: impl FnOnce(&mut Vec<String>)) -> Result<String, String> {
    let lines: Vec<&str> = config.split_inclusive('\n').collect();
    let (head, mut inner, tail) = match lines.iter().position(|l| l.trim_end() == BEGIN) {
        None => {
            let sep = if config.is_empty() || config.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            (
                format!("{config}{sep}{BEGIN}\n"),
                Vec::new(),
                format!("{END}\n"),
            )
        }
        Some(begin) => {
            let end = lines[begin..]
                .iter()
                .position(|l| l.trim_end() == END)
                .map(|i| begin + i)
                .ok_or_else(|| {
                    format!("`{BEGIN}` has no matching `{END}`: fix the file by hand")
                })?;
            let inner = lines[begin + 1..end]
                .iter()
                .map(|l| l.to_string())
                .collect();
            (lines[..=begin].concat(), inner, lines[end..].concat())
        }
    };
    edit(&mut inner);
    Ok(format!("{head}{}{tail}", inner.concat()))
}

/// The value of `line` if it sets `name` (`name = value`).
fn value_of<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_once('=')
        .filter(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim())
}

/// `config` with `key` in our block's `extra-trusted-public-keys` line:
/// the block is appended if missing; lines outside it are untouched; the
/// same text comes back if the key is already there.
pub fn with_trusted_key(config: &str, key: &PublicKey) -> Result<String, String> {
    let key = key.to_string();
    edit_block(config, |lines| {
        match lines.iter().position(|l| value_of(l, SETTING).is_some()) {
            Some(i) => {
                let keys: Vec<&str> = value_of(&lines[i], SETTING)
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect();
                if !keys.contains(&key.as_str()) {
                    lines[i] = format!("{SETTING} = {} {key}\n", keys.join(" "));
                }
            }
            None => lines.push(format!("{SETTING} = {key}\n")),
        }
    })
}

/// `config` with `name = value` in our block (replacing the block's line
/// for `name`, if any); the same text if it is already so.
pub fn with_setting(config: &str, name: &str, value: &str) -> Result<String, String> {
    edit_block(config, |lines| {
        let line = format!("{name} = {value}\n");
        match lines.iter().position(|l| value_of(l, name).is_some()) {
            Some(i) if value_of(&lines[i], name) == Some(value) => {}
            Some(i) => lines[i] = line,
            None => lines.push(line),
        }
    })
}

/// Adds `key` to the trusted public keys in the node's nix.conf, over a
/// root SSH session. Restarts nothing.
pub async fn trust_key(session: &SshSession, key: &PublicKey) -> Result<TrustChange, TrustError> {
    edit_nix_conf(session, |old| with_trusted_key(old, key)).await
}

/// Sets each `(name, value)` in our block of the node's nix.conf, over a
/// root SSH session. Restarts nothing.
pub async fn set_settings(
    session: &SshSession,
    settings: &[(&str, &str)],
) -> Result<TrustChange, TrustError> {
    edit_nix_conf(session, |old| {
        settings
            .iter()
            .try_fold(old.to_owned(), |text, (name, value)| {
                with_setting(&text, name, value)
            })
    })
    .await
}

/// Rewrites the node's nix.conf as `edit` says, if that changes it.
async fn edit_nix_conf(
    session: &SshSession,
    edit: impl FnOnce(&str) -> Result<String, String>,
) -> Result<TrustChange, TrustError> {
    let node = format!("{}@{}:{}", session.user(), session.host(), session.port());
    if session.user() != "root" {
        return Err(TrustError::NotRoot { node });
    }
    let conf = quote(NIX_CONF);
    let read = session
        .run(&format!("if [ -e {conf} ]; then cat {conf}; fi"))
        .await?;
    let failed = |what, out: &deploy_ssh::Output| TrustError::Command {
        node: node.clone(),
        what,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    };
    if !read.status.success() {
        return Err(failed("reading nix.conf", &read));
    }
    let bad = |reason: String| TrustError::BadConfig {
        node: node.clone(),
        reason,
    };
    let old = String::from_utf8(read.stdout).map_err(|_| bad("not UTF-8".to_owned()))?;
    let new = edit(&old).map_err(bad)?;
    if new == old {
        return Ok(TrustChange::Unchanged);
    }
    // The new text goes through stdin (nix.conf may hold secrets such as
    // access-tokens: never on a command line), into a sibling file renamed
    // over nix.conf in one step, keeping the old file's mode.
    let tmp = quote(&format!("{NIX_CONF}.nix-deploy-tmp"));
    let script = format!(
        "set -e; umask 077; mkdir -p /etc/nix; cat > {tmp}; \
         if [ -e {conf} ]; then chmod --reference={conf} {tmp}; else chmod 644 {tmp}; fi; \
         mv -f {tmp} {conf}"
    );
    const WHAT: &str = "writing nix.conf";
    run_with_input(session, WHAT, &script, new.as_bytes())
        .await
        .map_err(|e| match e {
            ProfileError::Ssh(e) => TrustError::from(e),
            ProfileError::Command { status, stderr, .. } => TrustError::Command {
                node,
                what: WHAT,
                status,
                stderr,
            },
            other => TrustError::Command {
                node,
                what: WHAT,
                status: "failed".to_owned(),
                stderr: other.to_string(),
            },
        })?;
    Ok(TrustChange::Changed)
}

#[cfg(test)]
mod tests {
    use nix_wire::signing::SecretKey;

    use super::*;

    fn key(seed: u8) -> PublicKey {
        SecretKey::from_seed(&format!("k{seed}-1"), [seed; 32])
            .unwrap()
            .public_key()
    }

    #[test]
    fn appends_a_block_then_is_idempotent() {
        let user = "# mine\nsandbox = false\nrequire-sigs = true"; // no final newline
        let once = with_trusted_key(user, &key(1)).unwrap();
        assert!(once.starts_with("# mine\nsandbox = false\nrequire-sigs = true\n# BEGIN"));
        assert_eq!(with_trusted_key(&once, &key(1)).unwrap(), once);
        assert_eq!(with_trusted_key("", &key(1)).unwrap().lines().count(), 3);
    }

    #[test]
    fn adds_a_second_key_in_place_keeping_other_lines() {
        let once = with_trusted_key("a = 1\n", &key(1)).unwrap();
        let text = format!("{once}after = 2\n");
        let text = text.replace(END, &format!("other-setting = x\n{END}"));
        let twice = with_trusted_key(&text, &key(2)).unwrap();
        assert_eq!(
            twice,
            format!(
                "a = 1\n{BEGIN}\n{SETTING} = {} {}\nother-setting = x\n{END}\nafter = 2\n",
                key(1),
                key(2)
            )
        );
        assert_eq!(with_trusted_key(&twice, &key(1)).unwrap(), twice);
    }

    #[test]
    fn settings_replace_their_own_line_only() {
        let user = "build-users-group = mine\n";
        let once = with_setting(user, "build-users-group", "nixbld").unwrap();
        assert_eq!(
            once,
            format!("{user}{BEGIN}\nbuild-users-group = nixbld\n{END}\n")
        );
        assert_eq!(
            with_setting(&once, "build-users-group", "nixbld").unwrap(),
            once
        );
        let keyed = with_trusted_key(&once, &key(1)).unwrap();
        let changed = with_setting(&keyed, "build-users-group", "other").unwrap();
        assert_eq!(changed, keyed.replace("= nixbld", "= other"));
    }

    #[test]
    fn an_unterminated_block_is_an_error() {
        assert!(with_trusted_key(&format!("{BEGIN}\nx = 1\n"), &key(1)).is_err());
    }
}
