//! Owns the parsing of node addresses: `ssh://[USER@]HOST[:PORT]`, a plain
//! `[USER@]HOST[:PORT]` (IPv6 literals in brackets) or an `ssh_config` alias.

use std::fmt;
use std::str::FromStr;

use crate::error::SshError;

/// Where to connect, as the user wrote it. Unset parts are filled in from
/// `ssh_config` and then from the defaults (port 22, the local user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The login name, if given (`USER@`).
    pub user: Option<String>,
    /// A host name, an address or an `ssh_config` alias (`Host` pattern).
    pub host: String,
    /// The port, if given (`:PORT`).
    pub port: Option<u16>,
}

impl Target {
    /// A target for `host` with no user and no port.
    pub fn new(host: impl Into<String>) -> Self {
        Target {
            user: None,
            host: host.into(),
            port: None,
        }
    }

    /// Parses `ssh://[USER@]HOST[:PORT]` or `[USER@]HOST[:PORT]`; an IPv6
    /// address with a port is written `[ADDR]:PORT`.
    pub fn parse(input: &str) -> Result<Self, SshError> {
        let invalid = |reason: &str| SshError::InvalidTarget {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let rest = match input.strip_prefix("ssh://") {
            Some(rest) => rest.strip_suffix('/').unwrap_or(rest),
            None => input,
        };
        if rest.contains('/') {
            return Err(invalid(
                "a path is not allowed; expected [USER@]HOST[:PORT]",
            ));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => {
                if user.is_empty() {
                    return Err(invalid("the user before '@' is empty"));
                }
                (Some(user.to_string()), hostport)
            }
            None => (None, rest),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("missing ']' after an IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("expected ':PORT' after ']'"))?,
                ),
            };
            (host, port)
        } else if hostport.matches(':').count() > 1 {
            // A bare IPv6 address without a port.
            (hostport, None)
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid("the port is not a number from 1 to 65535"))?,
            ),
        };
        Ok(Target {
            user,
            host: host.to_string(),
            port,
        })
    }
}

impl FromStr for Target {
    type Err = SshError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(port)) => write!(f, "[{}]:{port}", self.host),
            (false, Some(port)) => write!(f, "{}:{port}", self.host),
            (_, None) => write!(f, "{}", self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: Option<&str>, host: &str, port: Option<u16>) -> Target {
        Target {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn parses_the_forms() {
        assert_eq!(Target::parse("node1").ok(), Some(t(None, "node1", None)));
        assert_eq!(
            Target::parse("root@10.0.0.2:2222").ok(),
            Some(t(Some("root"), "10.0.0.2", Some(2222)))
        );
        assert_eq!(
            Target::parse("ssh://admin@node1.example").ok(),
            Some(t(Some("admin"), "node1.example", None))
        );
        assert_eq!(
            Target::parse("ssh://[::1]:22").ok(),
            Some(t(None, "::1", Some(22)))
        );
        assert_eq!(
            Target::parse("fe80::1").ok(),
            Some(t(None, "fe80::1", None))
        );
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "@host", "host:0", "host:x", "ssh://host/path", "[::1"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_round_trip() {
        for s in ["root@node1:2222", "node1", "[::1]:22"] {
            assert_eq!(
                Target::parse(s).map(|t| t.to_string()).ok().as_deref(),
                Some(s)
            );
        }
    }
}
