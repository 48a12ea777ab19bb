//! Quoting words for a POSIX shell: for commands run on nodes over SSH
//! (whose remote side always goes through the login shell) and for showing
//! command lines to people.

/// Quotes one word for a POSIX shell, leaving words that need no quoting
/// as they are.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && !word.starts_with('#')
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,#".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_only_what_a_shell_would_split_or_interpret() {
        assert_eq!(quote("/nix/var/nix/profiles/x"), "/nix/var/nix/profiles/x");
        assert_eq!(quote("path:/a#b.c"), "path:/a#b.c");
        assert_eq!(quote("#comment"), "'#comment'");
        assert_eq!(quote("nix-command flakes"), "'nix-command flakes'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("a'b; rm -rf /"), r"'a'\''b; rm -rf /'");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
    }
}
