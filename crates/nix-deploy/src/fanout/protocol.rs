//! What the deployer and a node's relay (`nix-deploy-relay`, the
//! `deploy-relay` crate) say to each other: one JSON object per line, the
//! deployer's [`Request`]s on the relay's stdin, the relay's [`Reply`]s on
//! its stdout. The relay serves one edge of the fan-out (its node's store
//! to one other node's daemon) and exits when its stdin closes, which is
//! also how it learns that the deployer went away.
//!
//! A conversation:
//!
//! ```text
//! → {"target":{"host":"10.0.0.3","port":22,"user":"root","host_keys":["ssh-ed25519 AAAA…"],"command":"nix-daemon --stdio","connect_timeout_secs":10}}
//! ← {"ready":{"protocol":1,"public_key":"ssh-ed25519 AAAA… nix-deploy-relay","source_address":"10.0.0.2"}}
//!   (the deployer authorizes the key on the target, for that source)
//! → "connect"
//! ← {"connected":{"node":"root@10.0.0.3:22"}}
//! → {"copy":{"paths":["/nix/store/…-a", "/nix/store/…-b"]}}
//! ← {"progress":{"bytes_sent":1048576}} … {"progress":{"paths_done":["/nix/store/…-a"]}} …
//! ← {"copied":{"sent_paths":2,"sent_bytes":2097152}}
//! ```
//!
//! Any request may be answered by `{"failed":{"error":"…"}}`, after which
//! the relay takes no more requests. The key is the relay's own, made when
//! it starts: its private half never leaves the relay's memory.

use serde::{Deserialize, Serialize};

/// The version of this conversation; a relay answering another one is not
/// used.
pub const PROTOCOL: u32 = 1;

/// What `nix-deploy-relay --version` prints (one line).
pub fn version_line() -> String {
    format!("nix-deploy-relay {PROTOCOL}")
}

/// The relay's program inside its package.
pub const PROGRAM: &str = "bin/nix-deploy-relay";

/// The comment the relay's public key carries.
pub const KEY_COMMENT: &str = "nix-deploy-relay";

/// Where the relay sends: the target node as the deployer reached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTarget {
    /// Host name or address, as the relay's node should reach it.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login name.
    pub user: String,
    /// The target's host keys (OpenSSH public key lines), as the deployer
    /// verified them: the only ones the relay accepts.
    pub host_keys: Vec<String>,
    /// The command that runs the target's daemon (what the target's
    /// authorized_keys entry forces anyway).
    pub command: String,
    /// Limit for the TCP connection and the SSH handshake.
    pub connect_timeout_secs: u64,
}

/// What the deployer asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// First: where to send. Answered by [`Reply::Ready`].
    Target(RelayTarget),
    /// The key is authorized on the target: connect. Answered by
    /// [`Reply::Connected`].
    Connect,
    /// Copy the closure of these paths (absolute store paths) from this
    /// node's store to the target's. Answered by progress, then
    /// [`Reply::Copied`].
    Copy {
        /// The roots.
        paths: Vec<String>,
    },
}

/// What the relay answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The relay runs and has its key.
    Ready {
        /// Its [`PROTOCOL`].
        protocol: u32,
        /// Its public key, an OpenSSH line (`ssh-ed25519 AAAA… comment`).
        public_key: String,
        /// The address this node sends from to reach the target, when
        /// known: what the target's authorized_keys entry allows (`from=`).
        source_address: Option<String>,
    },
    /// Connected to the target's daemon.
    Connected {
        /// The target, as named in messages.
        node: String,
    },
    /// A copy is under way.
    Progress(Progress),
    /// A copy is done.
    Copied {
        /// Paths it sent.
        sent_paths: usize,
        /// NAR bytes it sent.
        sent_bytes: u64,
    },
    /// The request failed; the relay takes no more.
    Failed {
        /// Why.
        error: String,
    },
}

/// Progress of a relay's copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// More NAR bytes went out.
    BytesSent(u64),
    /// These paths are valid on the target.
    PathsDone(Vec<String>),
}

/// One line of the conversation: `value` as JSON and a newline.
pub fn line<T: Serialize>(value: &T) -> String {
    // Serializing these types can't fail (no maps with non-string keys).
    let mut text = serde_json::to_string(value).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_read_as_documented() {
        let requests = [
            Request::Target(RelayTarget {
                host: "10.0.0.3".into(),
                port: 22,
                user: "root".into(),
                host_keys: vec!["ssh-ed25519 AAAA".into()],
                command: "nix-daemon --stdio".into(),
                connect_timeout_secs: 10,
            }),
            Request::Connect,
            Request::Copy {
                paths: vec!["/nix/store/a".into()],
            },
        ];
        for r in &requests {
            let text = line(r);
            assert!(text.ends_with('\n') && !text[..text.len() - 1].contains('\n'));
            assert_eq!(&serde_json::from_str::<Request>(&text).unwrap(), r);
        }
        assert_eq!(line(&Request::Connect), "\"connect\"\n");
        let reply = Reply::Progress(Progress::PathsDone(vec!["/nix/store/a".into()]));
        assert_eq!(
            line(&reply),
            "{\"progress\":{\"paths_done\":[\"/nix/store/a\"]}}\n"
        );
        assert_eq!(serde_json::from_str::<Reply>(&line(&reply)).unwrap(), reply);
    }
}
