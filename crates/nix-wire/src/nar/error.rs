//! [`NarError`]: why encoding, decoding or unpacking a NAR failed. Every
//! variant names the filesystem path, or the byte offset and NAR entry, where
//! it happened.

use std::io;
use std::path::PathBuf;

/// Why a NAR could not be produced, parsed or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum NarError {
    /// A filesystem operation on `path` failed.
    #[error("{path}: {source}", path = path.display())]
    Fs {
        /// The file or directory being read or written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The path is a socket, FIFO or device, which NARs cannot represent.
    #[error("{path}: cannot archive a {kind}; only regular files, symlinks and directories", path = path.display())]
    UnsupportedFileType {
        /// The offending path.
        path: PathBuf,
        /// What it is, e.g. `"socket"`.
        kind: &'static str,
    },
    /// A file shrank while it was being archived.
    #[error("{path}: file changed size while being archived", path = path.display())]
    FileChanged {
        /// The file that changed.
        path: PathBuf,
    },
    /// The input ended before the NAR did.
    #[error("truncated NAR at byte {offset}")]
    Truncated {
        /// How many bytes were read before the input ended.
        offset: u64,
    },
    /// The input violates the NAR grammar or one of its limits.
    #[error("invalid NAR at byte {offset}, {entry}: {reason}")]
    Invalid {
        /// Offset of the first byte of the offending item.
        offset: u64,
        /// Where in the archive: `root` or `entry 'a/b'`.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the NAR input failed.
    #[error("reading NAR at byte {offset}: {source}")]
    Read {
        /// How many bytes were read before the failure.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// Bytes follow the end of a NAR where a whole NAR was expected.
    #[error("trailing data after the end of the NAR at byte {offset}")]
    TrailingData {
        /// Size of the NAR, where the trailing data starts.
        offset: u64,
    },
    /// Writing the NAR to its output failed.
    #[error("writing NAR: {0}")]
    Write(#[source] io::Error),
    /// The encoder could not finish: the reader of [`super::encode_async`]
    /// was dropped, or the encoder stopped before the end of the NAR.
    #[error("NAR encoder task failed: {0}")]
    Task(String),
}

impl NarError {
    pub(crate) fn fs(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> NarError {
        let path = path.into();
        move |source| NarError::Fs { path, source }
    }
}
