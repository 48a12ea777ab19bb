//! Owns [`SshOptions`]: the caller's knobs (config and known_hosts files,
//! host key policy, agent, timeouts), with OpenSSH-like defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{PrivateKey, PublicKey};

/// The remote command that speaks the Nix daemon protocol on stdin/stdout.
pub const DEFAULT_DAEMON_COMMAND: &str = "nix-daemon --stdio";

/// Which `ssh_config` file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// `~/.ssh/config` if it exists.
    Default,
    /// This file, which must exist.
    Path(PathBuf),
    /// No config file.
    None,
}

/// Which ssh-agent to ask for keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    /// The socket named by `SSH_AUTH_SOCK`, if set.
    Env,
    /// This socket.
    Socket(PathBuf),
    /// No agent.
    Disabled,
}

/// How to connect: everything not given by the target or `ssh_config`.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The home directory used for `~`, `%d` and the default files.
    pub home: PathBuf,
    /// The `ssh_config` file.
    pub config_file: ConfigFile,
    /// known_hosts files to use instead of `UserKnownHostsFile` (default
    /// `~/.ssh/known_hosts`) plus `/etc/ssh/ssh_known_hosts`; new keys go to
    /// the first one.
    pub known_hosts_files: Vec<PathBuf>,
    /// Accept and record the key of a host not in known_hosts (OpenSSH's
    /// `StrictHostKeyChecking accept-new`). A changed key is always refused.
    pub accept_new_host_keys: bool,
    /// The ssh-agent.
    pub agent: Agent,
    /// Key files tried after those from `ssh_config`.
    pub identity_files: Vec<PathBuf>,
    /// Keys held in memory (e.g. a key made for one deploy), tried before
    /// the agent and the key files.
    pub identity_keys: Vec<Arc<PrivateKey>>,
    /// Host keys accepted for the target (not for jump hosts) before
    /// known_hosts is read, as when the caller verified the host over
    /// another connection and hands its key along. Any other key is
    /// checked against known_hosts as usual.
    pub pinned_host_keys: Vec<PublicKey>,
    /// The login name when neither the target nor `ssh_config` gives one.
    pub default_user: Option<String>,
    /// Limit for the TCP connection, the SSH handshake and authentication,
    /// per hop (for a jump, opening the tunnel counts too).
    pub connect_timeout: Duration,
    /// Send a keepalive after this long without traffic from the server.
    pub keepalive_interval: Duration,
    /// Close the connection after this many unanswered keepalives.
    pub keepalive_max: usize,
    /// Keep at most this many bytes of a remote command's stderr.
    pub stderr_limit: usize,
    /// Compress the connection (zlib), whatever `ssh_config`'s
    /// `Compression` says; `None` follows `ssh_config` (default off).
    pub compression: Option<bool>,
}

impl Default for SshOptions {
    /// `$HOME`, `~/.ssh/config`, `SSH_AUTH_SOCK`, strict host keys,
    /// 10 s connect timeout, keepalive every 15 s (3 missed = dead), 64 KiB
    /// of stderr.
    fn default() -> Self {
        SshOptions {
            home: std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root")),
            config_file: ConfigFile::Default,
            known_hosts_files: Vec::new(),
            accept_new_host_keys: false,
            agent: Agent::Env,
            identity_files: Vec::new(),
            identity_keys: Vec::new(),
            pinned_host_keys: Vec::new(),
            default_user: None,
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            stderr_limit: 64 * 1024,
            compression: None,
        }
    }
}
