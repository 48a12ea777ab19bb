//! Owns the `ssh_config` subset we honour: `Host` blocks (patterns with `*`,
//! `?`, `!negation`, several per line; options before the first `Host`
//! apply to all hosts) holding `HostName`, `User`, `Port`, `IdentityFile`,
//! `IdentitiesOnly`, `UserKnownHostsFile`, `ProxyJump`, `ConnectTimeout`,
//! `ServerAliveInterval`, `ServerAliveCountMax`, `StrictHostKeyChecking`
//! and `Compression`.
//! As in OpenSSH the first value obtained wins, except `IdentityFile`, which
//! accumulates. `Match` blocks and `Include` are not supported: they are
//! skipped with a warning. Other keywords are ignored.
//!
//! Written here rather than taken from `russh-config`, which (0.58) rejects
//! options before the first `Host`, splits on a single space only (no tabs,
//! no `Key=Value`), lets the config override an explicit port and knows
//! neither `IdentitiesOnly` nor `%` tokens in `IdentityFile`.

use std::path::{Path, PathBuf};

use crate::error::SshError;

/// A parsed config file: its blocks in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct SshConfig {
    blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
struct Block {
    /// `None` for the options before the first `Host`, and `Match` blocks
    /// get `Some(vec![])`, which matches nothing.
    patterns: Option<Vec<Pattern>>,
    options: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone)]
struct Pattern {
    glob: String,
    negated: bool,
}

/// The options that apply to one host, unexpanded (tokens and `~` stay).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
    pub identities_only: Option<bool>,
    pub user_known_hosts_files: Option<Vec<String>>,
    pub proxy_jump: Option<String>,
    pub connect_timeout: Option<u64>,
    pub server_alive_interval: Option<u64>,
    pub server_alive_count_max: Option<usize>,
    pub strict_host_key_checking: Option<String>,
    pub compression: Option<bool>,
}

impl SshConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, SshError> {
        let text = std::fs::read_to_string(path).map_err(|source| SshError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SshError> {
        let mut blocks = vec![Block {
            patterns: None,
            options: Vec::new(),
        }];
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |message: String| SshError::Config {
                path: path.to_path_buf(),
                line,
                message,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_keyword(trimmed);
            let keyword = keyword.to_ascii_lowercase();
            let args = split_args(rest).map_err(err)?;
            if args.is_empty() {
                return Err(err(format!("{keyword} needs a value")));
            }
            match keyword.as_str() {
                "host" => blocks.push(Block {
                    patterns: Some(
                        args.iter()
                            .map(|a| match a.strip_prefix('!') {
                                Some(glob) => Pattern {
                                    glob: glob.to_ascii_lowercase(),
                                    negated: true,
                                },
                                None => Pattern {
                                    glob: a.to_ascii_lowercase(),
                                    negated: false,
                                },
                            })
                            .collect(),
                    ),
                    options: Vec::new(),
                }),
                "match" => {
                    tracing::warn!(file = %path.display(), line, "ssh config: Match blocks are not supported; skipping this block");
                    blocks.push(Block {
                        patterns: Some(Vec::new()),
                        options: Vec::new(),
                    });
                }
                "include" => {
                    tracing::warn!(file = %path.display(), line, "ssh config: Include is not supported; ignored");
                }
                _ => {
                    if let Some(block) = blocks.last_mut() {
                        block.options.push((keyword, args));
                    }
                }
            }
        }
        Ok(SshConfig { blocks })
    }

    /// The options for `host` (the name or alias as written by the user).
    pub fn query(&self, host: &str) -> HostConfig {
        let host = host.to_ascii_lowercase();
        let mut out = HostConfig::default();
        for block in self.blocks.iter().filter(|b| b.matches(&host)) {
            for (keyword, args) in &block.options {
                out.apply(keyword, args);
            }
        }
        out
    }
}

impl Block {
    fn matches(&self, host: &str) -> bool {
        let Some(patterns) = &self.patterns else {
            return true;
        };
        let mut matched = false;
        for p in patterns {
            if glob_match(p.glob.as_bytes(), host.as_bytes()) {
                if p.negated {
                    return false;
                }
                matched = true;
            }
        }
        matched
    }
}

impl HostConfig {
    fn apply(&mut self, keyword: &str, args: &[String]) {
        let first = args.first().cloned().unwrap_or_default();
        let yes = |s: &str| matches!(s.to_ascii_lowercase().as_str(), "yes" | "true");
        match keyword {
            "hostname" => set(&mut self.hostname, first),
            "user" => set(&mut self.user, first),
            "port" => match first.parse() {
                Ok(port) => set(&mut self.port, port),
                Err(_) => tracing::warn!(value = %first, "ssh config: bad Port ignored"),
            },
            "identityfile" => self.identity_files.push(first),
            "identitiesonly" => set(&mut self.identities_only, yes(&first)),
            "userknownhostsfile" => set(&mut self.user_known_hosts_files, args.to_vec()),
            "proxyjump" => set(&mut self.proxy_jump, args.concat()),
            "connecttimeout" => {
                if let Ok(secs) = first.parse() {
                    set(&mut self.connect_timeout, secs)
                }
            }
            "serveraliveinterval" => {
                if let Ok(secs) = first.parse() {
                    set(&mut self.server_alive_interval, secs)
                }
            }
            "serveralivecountmax" => {
                if let Ok(n) = first.parse() {
                    set(&mut self.server_alive_count_max, n)
                }
            }
            "stricthostkeychecking" => set(
                &mut self.strict_host_key_checking,
                first.to_ascii_lowercase(),
            ),
            "compression" => set(&mut self.compression, yes(&first)),
            other => tracing::debug!(keyword = other, "ssh config: keyword ignored"),
        }
    }
}

/// First value obtained wins.
fn set<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

/// Splits `Keyword value`, `Keyword=value` and `Keyword = value`.
fn split_keyword(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (keyword, rest)
}

/// Splits arguments on whitespace, honouring double quotes.
fn split_args(rest: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_arg = false;
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_arg = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_arg {
                    args.push(std::mem::take(&mut current));
                    in_arg = false;
                }
            }
            c => {
                current.push(c);
                in_arg = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".to_string());
    }
    if in_arg {
        args.push(current);
    }
    Ok(args)
}

/// OpenSSH's pattern match: `*` any run, `?` any one character (for
/// `Host` lines and known_hosts host patterns alike). Iterative, going back
/// only to the last `*`: at most pattern × text steps, however many stars
/// a hostile file puts in a pattern (trying every split at every star took
/// a minute for 100 stars, found by fuzzing).
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The last `*` seen, and where in the text its run would end next.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((at, end)) => {
                    star = Some((at, end + 1));
                    p = at + 1;
                    t = end + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Expands a leading `~` and the tokens `%h` (remote host name), `%n` (the
/// name as given), `%p`, `%r` (remote user), `%u` (local user), `%d` (home)
/// and `%%`.
pub(crate) fn expand_path(raw: &str, tokens: &Tokens<'_>) -> PathBuf {
    let raw = match raw.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", tokens.home.display())
        }
        _ => raw.to_string(),
    };
    PathBuf::from(expand_tokens(&raw, tokens))
}

/// The values `%` tokens expand to.
pub(crate) struct Tokens<'a> {
    pub host: &'a str,
    pub alias: &'a str,
    pub port: u16,
    pub remote_user: &'a str,
    pub local_user: &'a str,
    pub home: &'a Path,
}

pub(crate) fn expand_tokens(raw: &str, t: &Tokens<'_>) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(t.host),
            Some('n') => out.push_str(t.alias),
            Some('p') => out.push_str(&t.port.to_string()),
            Some('r') => out.push_str(t.remote_user),
            Some('u') => out.push_str(t.local_user),
            Some('d') => out.push_str(&t.home.display().to_string()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SshConfig {
        match SshConfig::parse(text, Path::new("test_config")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn first_match_wins_and_identity_files_accumulate() {
        let c = parse(
            "User globaluser\n\
             Host node1 node2\n  HostName 10.0.0.1\n  Port=2222\n  IdentityFile ~/.ssh/a\n\
             Host node*\n  HostName other\n  User admin\n  IdentityFile \"/keys/%h key\"\n\
             Host *\n  Port 22\n  IdentitiesOnly yes\n",
        );
        let h = c.query("NODE1");
        assert_eq!(h.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(h.port, Some(2222));
        assert_eq!(h.user.as_deref(), Some("globaluser"));
        assert_eq!(h.identity_files, vec!["~/.ssh/a", "/keys/%h key"]);
        assert_eq!(h.identities_only, Some(true));
        let h = c.query("node3");
        assert_eq!(h.hostname.as_deref(), Some("other"));
        assert_eq!(h.port, Some(22));
    }

    #[test]
    fn negation_excludes_a_block() {
        let c = parse(
            "Host *.example !bastion.example\n User deploy\nHost bastion.example\n User jump\n",
        );
        assert_eq!(c.query("a.example").user.as_deref(), Some("deploy"));
        assert_eq!(c.query("bastion.example").user.as_deref(), Some("jump"));
        assert_eq!(c.query("other").user, None);
    }

    #[test]
    fn match_blocks_are_skipped() {
        let c = parse("Match user root\n User nobody\nHost *\n User ok\n");
        assert_eq!(c.query("x").user.as_deref(), Some("ok"));
    }

    #[test]
    fn compression_is_off_unless_asked() {
        let c = parse("Host slow\n  Compression yes\nHost *\n  Compression no\n");
        assert_eq!(c.query("slow").compression, Some(true));
        assert_eq!(c.query("fast").compression, Some(false));
        assert_eq!(parse("").query("any").compression, None);
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"n?de*", b"node12"));
        assert!(!glob_match(b"n?de", b"nde"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"10.0.0.?", b"10.0.0.10"));
        // Many stars that can't match: quick, not exponential.
        let stars = [b'*'; 200];
        let mut pattern = stars.to_vec();
        pattern.push(b'x');
        assert!(!glob_match(&pattern, &[b'y'; 200]));
        assert!(glob_match(&stars, b"anything"));
    }

    /// The textbook recursive definition, to check the iterative one on.
    fn reference(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|i| reference(rest, &text[i..])),
            Some((b'?', rest)) => !text.is_empty() && reference(rest, &text[1..]),
            Some((c, rest)) => text.first() == Some(c) && reference(rest, &text[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn globs_match_as_the_definition_says(pattern in "[ab*?]{0,10}", text in "[ab]{0,12}") {
            proptest::prop_assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                reference(pattern.as_bytes(), text.as_bytes())
            );
        }
    }

    #[test]
    fn expands_tokens_and_tilde() {
        let t = Tokens {
            host: "10.0.0.1",
            alias: "node1",
            port: 22,
            remote_user: "root",
            local_user: "me",
            home: Path::new("/home/me"),
        };
        assert_eq!(
            expand_path("~/.ssh/%n-%h-%r-%u-%p%%", &t),
            PathBuf::from("/home/me/.ssh/node1-10.0.0.1-root-me-22%")
        );
        assert_eq!(expand_path("~other/x", &t), PathBuf::from("~other/x"));
    }
}
