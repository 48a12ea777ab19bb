//! The one error type of the harness.

use std::path::PathBuf;

/// Why a cluster could not be started, changed or torn down.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Network namespaces, veths and mounts need root.
    #[error("the test cluster needs root (it makes network namespaces, veths and mounts)")]
    NotRoot,
    /// The node template made by `scripts/setup-test-machine` is absent.
    #[error("node template {0} is missing: run scripts/setup-test-machine")]
    TemplateMissing(PathBuf),
    /// A file-system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path involved.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An external command (`ip`, `tc`, `nsenter`, `ssh-keygen`...) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the reader.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// A node's sshd did not accept connections in time.
    #[error("node {node}: sshd did not answer on {addr} within {secs} s (log: {log})")]
    SshdTimeout {
        /// The node's name.
        node: String,
        /// The address tried.
        addr: std::net::SocketAddr,
        /// How long we waited.
        secs: u64,
        /// The sshd log file on the host.
        log: PathBuf,
    },
    /// All the /24s of 10.213.0.0/16 are taken by running clusters.
    #[error("no free /24 left in 10.213.0.0/16 (256 clusters run)")]
    NoFreeSlot,
    /// A node did not behave as expected (e.g. a file it should hold is malformed).
    #[error("node {node}: {detail}")]
    Node {
        /// The node's name.
        node: String,
        /// What went wrong.
        detail: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ClusterError>;

/// Wraps an I/O error with a description of what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}
