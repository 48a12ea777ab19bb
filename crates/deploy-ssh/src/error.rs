//! Owns [`SshError`]: every failure of the transport, each naming the host,
//! port and user concerned and saying what to do about it.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while connecting, authenticating or running
/// commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The node address could not be parsed.
    #[error("invalid SSH target {input:?}: {reason}")]
    InvalidTarget {
        /// What the user wrote.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An `ssh_config` file could not be read.
    #[error("cannot read ssh config {}: {source}", path.display())]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// An `ssh_config` line is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },

    /// The host name did not resolve.
    #[error("cannot resolve {host}:{port}: {source}: check the name (and HostName in ssh config)")]
    Resolve {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
        /// The resolver error.
        source: std::io::Error,
    },

    /// The TCP connection failed.
    #[error("connection to {host}:{port} failed: {source}: is the node up and sshd listening?")]
    Connect {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The socket error.
        source: std::io::Error,
    },

    /// The TCP connection or the SSH handshake did not finish in time.
    #[error("connection to {host}:{port} timed out after {}: is the node up and sshd listening?", secs(*.timeout))]
    ConnectTimeout {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The connect timeout that expired.
        timeout: Duration,
    },

    /// The server's host key is in no known_hosts file.
    #[error(
        "host key of {host}:{port} is unknown ({algorithm} {fingerprint}), not found in {}: \
         check the fingerprint out of band, then add the key to known_hosts \
         or connect once with accept-new enabled",
        paths(known_hosts)
    )]
    UnknownHostKey {
        /// The host as looked up in known_hosts.
        host: String,
        /// The port.
        port: u16,
        /// The key algorithm, e.g. `ssh-ed25519`.
        algorithm: String,
        /// `SHA256:...` fingerprint of the offered key.
        fingerprint: String,
        /// The files searched.
        known_hosts: Vec<PathBuf>,
    },

    /// The server offered a key different from the recorded one.
    #[error(
        "HOST KEY CHANGED for {host}:{port}: {}:{line} records {expected}, the server offered \
         {actual}; someone may be intercepting the connection (man in the middle), or the node \
         was reinstalled: if the change is expected, remove line {line} from {} and reconnect",
        file.display(), file.display()
    )]
    HostKeyChanged {
        /// The host as looked up in known_hosts.
        host: String,
        /// The port.
        port: u16,
        /// `ALGO SHA256:...` of the recorded key.
        expected: String,
        /// `ALGO SHA256:...` of the offered key.
        actual: String,
        /// The known_hosts file holding the recorded key.
        file: PathBuf,
        /// The 1-based line of the recorded key.
        line: usize,
    },

    /// The server offered a key marked `@revoked`.
    #[error(
        "host key of {host}:{port} ({fingerprint}) is marked @revoked in {}:{line}: refusing to connect",
        file.display()
    )]
    HostKeyRevoked {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// `SHA256:...` fingerprint of the offered key.
        fingerprint: String,
        /// The known_hosts file.
        file: PathBuf,
        /// The 1-based line.
        line: usize,
    },

    /// The server offered a certificate instead of a plain host key.
    #[error("{host}:{port} offered a host certificate; host certificates (@cert-authority) are not supported")]
    HostCertificate {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },

    /// A known_hosts file could not be read or appended to.
    #[error("known_hosts file {}: {source}", path.display())]
    KnownHosts {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// No key was accepted by the server.
    #[error(
        "authentication failed for {user}@{host}:{port}: tried agent keys [{}] and files [{}]{}: \
         is the public key in the node's authorized_keys?",
        agent_keys.join(", "), paths(files), notes_suffix(notes)
    )]
    AuthFailed {
        /// The login name.
        user: String,
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// `ALGO SHA256:...` of each agent key tried.
        agent_keys: Vec<String>,
        /// Each key file tried.
        files: Vec<PathBuf>,
        /// Why some sources could not be used (agent unreachable, unreadable files).
        notes: Vec<String>,
    },

    /// Authentication needed a passphrase-protected key that no agent holds.
    #[error(
        "authentication failed for {user}@{host}:{port}: key file {} is encrypted and no ssh-agent \
         offers it; passphrases are never asked for: load it with `ssh-add {}` \
         and make sure SSH_AUTH_SOCK points to that agent",
        path.display(), path.display()
    )]
    EncryptedKey {
        /// The login name.
        user: String,
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The encrypted key file.
        path: PathBuf,
    },

    /// The SSH handshake (version exchange, key exchange) failed.
    #[error("SSH handshake with {host}:{port} failed: {source}: is an SSH server listening there (check the port)?")]
    Handshake {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The protocol error.
        source: Box<russh::Error>,
    },

    /// The SSH protocol failed on an established connection.
    #[error("SSH connection to {host}:{port}: {source}")]
    Protocol {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The protocol error.
        source: Box<russh::Error>,
    },

    /// A jump host could not open the tunnel to the next hop.
    #[error("jump host {jump} could not open a tunnel to {host}:{port}: {source}: is the next hop reachable from the jump host?")]
    Tunnel {
        /// The jump host, as `user@host:port`.
        jump: String,
        /// The next hop.
        host: String,
        /// Its port.
        port: u16,
        /// The channel error.
        source: Box<russh::Error>,
    },

    /// A command could not be started.
    #[error("cannot run `{command}` on {node}: {source}: is the connection still up?")]
    Exec {
        /// The node, as `user@host:port`.
        node: String,
        /// The command.
        command: String,
        /// The channel error.
        source: Box<russh::Error>,
    },

    /// Reading or writing a remote command's streams failed.
    #[error("I/O with `{command}` on {node}: {source}")]
    Io {
        /// The node, as `user@host:port`.
        node: String,
        /// The command.
        command: String,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A remote command printed more than we keep.
    #[error("`{command}` on {node} printed more than {limit} bytes; stopped reading it")]
    TooMuchOutput {
        /// The node, as `user@host:port`.
        node: String,
        /// The command.
        command: String,
        /// The most bytes of stdout kept.
        limit: usize,
    },
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn notes_suffix(notes: &[String]) -> String {
    if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    }
}
