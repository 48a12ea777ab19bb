//! Our block in a node's `/etc/nix/nix.conf` (`# BEGIN nix-deploy` …
//! `# END nix-deploy`): the settings a deploy manages live there, the
//! user's other lines are kept byte for byte, and an edit that changes
//! nothing writes nothing. The text functions are pure; [`edit`] reads the
//! node's file, applies one, and writes the result through stdin (nix.conf
//! may hold secrets such as access-tokens: never on a command line) into a
//! sibling file renamed over nix.conf in one step.

use deploy_ssh::SshSession;

use crate::exec::{node_name, run_with, CommandError, Limits};
use crate::shell::quote;

/// The node's Nix configuration file.
pub const NIX_CONF: &str = "/etc/nix/nix.conf";
/// First line of our block.
pub const BEGIN: &str = "# BEGIN nix-deploy";
/// Last line of our block.
pub const END: &str = "# END nix-deploy";

/// Why nix.conf could not be edited.
#[derive(Debug, thiserror::Error)]
pub enum NixConfError {
    /// Editing nix.conf needs root.
    #[error("{node}: editing {NIX_CONF} needs root; connect as root (sshUser = \"root\")")]
    NotRoot {
        /// The node.
        node: String,
    },
    /// Reading or writing it failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// It is not UTF-8 or has a block we cannot edit.
    #[error("{node}: {NIX_CONF}: {reason}")]
    BadConfig {
        /// The node.
        node: String,
        /// What is wrong.
        reason: String,
    },
}

/// What [`edit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The file already said so; nothing was written.
    Unchanged,
    /// nix.conf was rewritten; restart the node's daemon to apply it.
    Changed,
}

/// `config` with our block's lines (each ending in a newline) changed by
/// `edit`: the block is appended if missing; lines outside it are kept
/// byte for byte.
fn edit_block(config: &str, edit: impl FnOnce(&mut Vec<String>)) -> Result<String, String> {
    let (head, mut inner, tail) = split_block(config)?;
    edit(&mut inner);
    Ok(format!("{head}{}{tail}", inner.concat()))
}

/// `config` as the text up to our block's first line, the block's lines
/// (each ending in a newline) and the text from its last line; a missing
/// block is an empty one at the end.
fn split_block(config: &str) -> Result<(String, Vec<String>, String), String> {
    let lines: Vec<&str> = config.split_inclusive('\n').collect();
    Ok(match lines.iter().position(|l| l.trim_end() == BEGIN) {
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
    })
}

/// The value of `line` if it sets `name` (`name = value`).
fn value_of<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_once('=')
        .filter(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim())
}

/// `config` with `word` among the words of our block's `name` line (a
/// list setting, e.g. `extra-trusted-public-keys`): the line is added if
/// missing; the same text comes back if the word is there already.
pub fn with_word(config: &str, name: &str, word: &str) -> Result<String, String> {
    edit_block(config, |lines| {
        match lines.iter().position(|l| value_of(l, name).is_some()) {
            Some(i) => {
                let words: Vec<&str> = value_of(&lines[i], name)
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect();
                if !words.contains(&word) {
                    lines[i] = format!("{name} = {} {word}\n", words.join(" "));
                }
            }
            None => lines.push(format!("{name} = {word}\n")),
        }
    })
}

/// `config` with `name = value` in our block (replacing the block's line
/// for `name`, if any); the same text if it is already so. `value` is
/// compared as nix.conf reads it, without surrounding blanks.
pub fn with_setting(config: &str, name: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    edit_block(config, |lines| {
        let line = format!("{name} = {value}\n");
        match lines.iter().position(|l| value_of(l, name).is_some()) {
            Some(i) if value_of(&lines[i], name) == Some(value) => {}
            Some(i) => lines[i] = line,
            None => lines.push(line),
        }
    })
}

/// The comment line of our block naming the settings that came from the
/// inventory ([`with_inventory_settings`]).
const FROM_INVENTORY: &str = "# from the inventory:";

/// `config` with our block holding exactly the inventory's `settings`
/// (each `(name, value)` set as [`with_setting`] does) among the names
/// the inventory set before: a setting the inventory no longer has (a
/// `cluster.cache` taken out, say) loses its line, so nodes stop reading a
/// cache nobody pushes to. Those names are kept in a comment line of the
/// block; settings set otherwise ([`with_setting`], [`with_word`]) are
/// left alone unless the inventory names them. The same text comes back
/// if nothing changes.
pub fn with_inventory_settings(config: &str, settings: &[(&str, &str)]) -> Result<String, String> {
    // A block we can't read names nothing here; editing it fails below.
    let block = split_block(config).map_or(Vec::new(), |(_, inner, _)| inner);
    let previous: Vec<&str> = block
        .iter()
        .find_map(|l| l.strip_prefix(FROM_INVENTORY))
        .map_or(Vec::new(), |names| names.split_whitespace().collect());
    if previous.is_empty() && settings.is_empty() {
        return Ok(config.to_owned());
    }
    let text = settings
        .iter()
        .try_fold(config.to_owned(), |text, (name, value)| {
            with_setting(&text, name, value)
        })?;
    let names: Vec<&str> = settings.iter().map(|(name, _)| *name).collect();
    edit_block(&text, |lines| {
        lines.retain(|l| {
            !l.starts_with(FROM_INVENTORY)
                && !previous
                    .iter()
                    .any(|gone| !names.contains(gone) && value_of(l, gone).is_some())
        });
        if !names.is_empty() {
            lines.insert(0, format!("{FROM_INVENTORY} {}\n", names.join(" ")));
        }
    })
}

/// Rewrites the node's nix.conf as `change` says, if that changes it,
/// over a root SSH session. Restarts nothing: the node's `nix-daemon`
/// reads nix.conf when it starts.
pub async fn edit(
    session: &SshSession,
    change: impl FnOnce(&str) -> Result<String, String>,
) -> Result<Change, NixConfError> {
    let node = node_name(session);
    if session.user() != "root" {
        return Err(NixConfError::NotRoot { node });
    }
    let conf = quote(NIX_CONF);
    let read = format!("if [ -e {conf} ]; then cat {conf}; fi");
    let old = run_with(session, "reading nix.conf", &read, &[], Limits::DEFAULT).await?;
    let bad = |reason: String| NixConfError::BadConfig {
        node: node.clone(),
        reason,
    };
    let old = String::from_utf8(old).map_err(|_| bad("not UTF-8".to_owned()))?;
    let new = change(&old).map_err(bad)?;
    if new == old {
        return Ok(Change::Unchanged);
    }
    let tmp = quote(&format!("{NIX_CONF}.nix-deploy-tmp"));
    let write = format!(
        "set -e; umask 077; mkdir -p /etc/nix; cat > {tmp}; \
         if [ -e {conf} ]; then chmod --reference={conf} {tmp}; else chmod 644 {tmp}; fi; \
         mv -f {tmp} {conf}"
    );
    run_with(
        session,
        "writing nix.conf",
        &write,
        new.as_bytes(),
        Limits::DEFAULT,
    )
    .await?;
    Ok(Change::Changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_1: &str = "k1-1:AAAA";
    const KEY_2: &str = "k2-1:BBBB";
    const KEYS: &str = "extra-trusted-public-keys";

    #[test]
    fn appends_a_block_then_is_idempotent() {
        let user = "# mine\nsandbox = false\nrequire-sigs = true"; // no final newline
        let once = with_word(user, KEYS, KEY_1).unwrap();
        assert!(once.starts_with("# mine\nsandbox = false\nrequire-sigs = true\n# BEGIN"));
        assert_eq!(with_word(&once, KEYS, KEY_1).unwrap(), once);
        assert_eq!(with_word("", KEYS, KEY_1).unwrap().lines().count(), 3);
    }

    #[test]
    fn adds_a_second_word_in_place_keeping_other_lines() {
        let once = with_word("a = 1\n", KEYS, KEY_1).unwrap();
        let text = format!("{once}after = 2\n");
        let text = text.replace(END, &format!("other-setting = x\n{END}"));
        let twice = with_word(&text, KEYS, KEY_2).unwrap();
        assert_eq!(
            twice,
            format!(
                "a = 1\n{BEGIN}\n{KEYS} = {KEY_1} {KEY_2}\nother-setting = x\n{END}\nafter = 2\n"
            )
        );
        assert_eq!(with_word(&twice, KEYS, KEY_1).unwrap(), twice);
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
        // Surrounding blanks are not a change (nix.conf ignores them).
        assert_eq!(
            with_setting(&once, "build-users-group", " nixbld ").unwrap(),
            once
        );
        let keyed = with_word(&once, KEYS, KEY_1).unwrap();
        let changed = with_setting(&keyed, "build-users-group", "other").unwrap();
        assert_eq!(changed, keyed.replace("= nixbld", "= other"));
    }

    #[test]
    fn inventory_settings_taken_out_lose_their_lines_and_nothing_else() {
        const SUBS: &str = "extra-substituters";
        let user = "substituters = https://mine\n";
        let installed = with_setting(user, "build-users-group", "nixbld").unwrap();
        let cache = [(SUBS, "http://c"), (KEYS, "c-1:CCCC")];
        let once = with_inventory_settings(&installed, &cache).unwrap();
        let keyed = with_word(&once, KEYS, KEY_1).unwrap();
        assert!(keyed.contains(&format!("{FROM_INVENTORY} {SUBS} {KEYS}\n")));
        assert!(keyed.contains("extra-substituters = http://c\n"));
        assert!(keyed.contains(&format!("{KEYS} = c-1:CCCC {KEY_1}\n")));
        // The same settings again: the cache's keys replace the line, the
        // deployer's key goes back in, and the text is as it was.
        let again = with_inventory_settings(&keyed, &cache).unwrap();
        assert_eq!(with_word(&again, KEYS, KEY_1).unwrap(), keyed);
        // The cache taken out: its lines and the comment go, the user's
        // line and the installer's setting stay, the deployer's key comes back.
        let gone = with_inventory_settings(&keyed, &[]).unwrap();
        let gone = with_word(&gone, KEYS, KEY_1).unwrap();
        assert_eq!(
            gone,
            format!("{user}{BEGIN}\nbuild-users-group = nixbld\n{KEYS} = {KEY_1}\n{END}\n")
        );
        // And nothing to do stays nothing.
        assert_eq!(with_inventory_settings(&gone, &[]).unwrap(), gone);
        assert_eq!(with_inventory_settings(user, &[]).unwrap(), user);
    }

    #[test]
    fn an_unterminated_block_is_an_error() {
        assert!(with_word(&format!("{BEGIN}\nx = 1\n"), KEYS, KEY_1).is_err());
    }
}
