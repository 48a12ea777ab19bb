//! The error type of the daemon client, and the daemon's own error reports.

use std::fmt;
use std::path::PathBuf;

use crate::store_path::StorePath;
use crate::wire::WireError;

use super::version::ProtocolVersion;

/// An error reported by the daemon with STDERR_ERROR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonError {
    /// The message as sent, including ANSI escapes.
    pub raw_message: String,
    /// Traces (protocol ≥ 1.26), as sent.
    pub raw_traces: Vec<String>,
    /// Exit status (protocol < 1.26; 100 = build failure), or `None`.
    pub exit_status: Option<u64>,
    /// Verbosity level of the error (protocol ≥ 1.26), or `None`.
    pub level: Option<u64>,
}

impl DaemonError {
    /// The message with ANSI escapes removed.
    pub fn message(&self) -> String {
        strip_ansi(&self.raw_message)
    }

    /// The traces with ANSI escapes removed.
    pub fn traces(&self) -> Vec<String> {
        self.raw_traces.iter().map(|t| strip_ansi(t)).collect()
    }
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message();
        // Old daemons prefix the message with "error: "; we say that already.
        let message = message.strip_prefix("error: ").unwrap_or(&message);
        write!(f, "{}", message.trim_end())?;
        for t in self.traces() {
            write!(f, "\n  … {}", t.trim_end())?;
        }
        Ok(())
    }
}

/// `text` without terminal escape sequences: SGR colours (`ESC [ … m`) and
/// other CSI sequences, and OSC hyperlinks (`ESC ] … BEL`), which Nix puts
/// in its messages even when they do not go to a terminal.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            // CSI: ESC [ parameters… final byte in @..~
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC (e.g. hyperlinks): ESC ] … BEL or ESC \
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Everything that can go wrong talking to a daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing protocol data failed during `op`.
    #[error("{op}: {source}")]
    Wire {
        /// The operation in progress.
        op: &'static str,
        /// What failed.
        #[source]
        source: WireError,
    },
    /// The daemon sent something the protocol does not allow.
    #[error("protocol violation during {op}: {detail}; the connection is unusable, reconnect")]
    Protocol {
        /// The operation in progress.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The daemon reported an error for `op`.
    #[error("the Nix daemon reported an error during {op}: {error}")]
    Daemon {
        /// The operation that failed.
        op: &'static str,
        /// The daemon's report.
        error: DaemonError,
    },
    /// AddMultipleToStore hit an already-valid path on a daemon with Nix bug
    /// #6253 (Nix 2.4–2.17, e.g. Debian's 2.8): paths before it were added,
    /// the rest were not; the connection is still usable.
    #[error("the daemon (Nix < 2.18) failed AddMultipleToStore because a path became valid concurrently (Nix bug #6253: {error}); query the valid paths again and retry the remaining ones")]
    AlreadyValidRace {
        /// The daemon's report (`not an absolute path: 'nix-archive-1'`).
        error: DaemonError,
    },
    /// The daemon is older than protocol 1.21.
    #[error("the Nix daemon speaks worker protocol {0}, older than 1.21: Nix 2.3 is the oldest supported version; upgrade Nix on that machine")]
    VersionTooOld(ProtocolVersion),
    /// An earlier failure left the connection out of sync.
    #[error("the daemon connection is unusable after an earlier failure; open a new connection")]
    Poisoned,
    /// The path is not valid in the daemon's store.
    #[error("path {0} is not valid in the daemon's store (build or copy it first)")]
    PathNotValid(StorePath),
    /// The NAR source yielded a different number of bytes than `nar_size`.
    #[error("NAR of {path} has {got}{more} bytes but its path info says narSize {expected}; the upload was aborted")]
    NarSizeMismatch {
        /// The path being transferred.
        path: StorePath,
        /// The size from the path info.
        expected: u64,
        /// How many bytes were seen before stopping.
        got: u64,
        /// `"+"` when the source had more bytes than that, else `""`.
        more: &'static str,
    },
    /// A downloaded NAR did not hash to the recorded narHash.
    #[error("NAR of {path} from the daemon hashes to {got}, but its narHash is {expected}; the store may be corrupt (run nix-store --verify --check-contents)")]
    NarHashMismatch {
        /// The path transferred.
        path: StorePath,
        /// The recorded hash.
        expected: crate::hash::Sha256Hash,
        /// The hash of what arrived.
        got: crate::hash::Sha256Hash,
    },
    /// Reading the caller's NAR source failed.
    #[error("reading the NAR of {path}: {source}")]
    NarSource {
        /// The path being uploaded.
        path: StorePath,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing to the caller's sink failed.
    #[error("writing the NAR of {path} to the sink: {source}")]
    Sink {
        /// The path being downloaded.
        path: StorePath,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The caller asked for something invalid (e.g. a bad client version).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Neither a daemon socket nor a `nix-daemon` binary is available.
    #[error("no Nix daemon at {socket} ({reason}) and no nix-daemon on PATH: install Nix (apt-get install nix-bin) or start the daemon (systemctl start nix-daemon.socket)")]
    NoDaemon {
        /// The socket path tried.
        socket: PathBuf,
        /// Why connecting failed.
        reason: std::io::Error,
    },
    /// The socket exists but we may not connect to it.
    #[error("permission denied connecting to the Nix daemon at {socket}: add your user to group nix-users (usermod -aG nix-users $USER, then log in again)")]
    PermissionDenied {
        /// The socket path.
        socket: PathBuf,
    },
    /// Connecting to the socket failed for another reason.
    #[error("connecting to the Nix daemon at {socket}: {source}")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Spawning the daemon process failed.
    #[error("spawning {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The daemon's report, if this error carries one.
    pub fn daemon_error(&self) -> Option<&DaemonError> {
        match self {
            Error::Daemon { error, .. } | Error::AlreadyValidRace { error } => Some(error),
            _ => None,
        }
    }

    pub(crate) fn protocol(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Protocol {
            op,
            detail: detail.into(),
        }
    }
}

/// Attaches the operation name to wire errors.
pub(crate) trait WireContext<T> {
    /// Maps a [`WireError`] into [`Error::Wire`] for `op`.
    fn during(self, op: &'static str) -> Result<T, Error>;
}

impl<T> WireContext<T> for Result<T, WireError> {
    fn during(self, op: &'static str) -> Result<T, Error> {
        self.map_err(|source| Error::Wire { op, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_sgr_escapes() {
        assert_eq!(
            strip_ansi("path '\x1b[35;1m/nix/store/x\x1b[0m' is not valid"),
            "path '/nix/store/x' is not valid"
        );
        assert_eq!(
            strip_ansi("\x1b[31;1merror:\x1b[0m boom\x1b"),
            "error: boom"
        );
        let link = "\x1b[31;1merror:\x1b[0m x \x1b]8;;http://a\x1b\\link\x1b]8;;\x07 y";
        assert_eq!(strip_ansi(link), "error: x link y");
    }
}
