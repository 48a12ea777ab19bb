//! Quoting words for a POSIX shell (for commands run on nodes and for
//! showing command lines to people), and the command line that runs a
//! script on a node: sshd hands it to the user's login shell, which may be
//! bash, zsh or something else; [`command_line`] has that shell do no more
//! than `exec /bin/sh -c`, so every script is parsed by a POSIX shell.

use std::time::Duration;

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

/// The command line that runs `script` on a node with `/bin/sh`, under
/// coreutils' `timeout` where the node has it (the script and everything
/// it started are killed after `timeout`, with KILL 5 s later if need
/// be: exit code 124, or 137); the script is one quoted word, `$1`.
pub fn command_line(script: &str, timeout: Duration) -> String {
    let secs = timeout.as_secs().max(1);
    let wrapper = format!(
        "if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {secs} /bin/sh -c \"$1\"; fi; \
         exec /bin/sh -c \"$1\""
    );
    format!("exec /bin/sh -c {} sh {}", quote(&wrapper), quote(script))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_command_line_runs_its_script_with_sh_under_a_timeout() {
        let script = r#"printf '%s\n' "it's" 'a  b' $((6 * 7))"#;
        let line = command_line(script, Duration::from_secs(3));
        let out = std::process::Command::new("bash")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's\na  b\n42\n");
        let slow = command_line("sleep 5", Duration::from_millis(1500));
        let started = std::time::Instant::now();
        let status = std::process::Command::new("bash")
            .args(["-c", &slow])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(124));
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
