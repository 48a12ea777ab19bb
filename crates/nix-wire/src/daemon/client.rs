//! [`DaemonClient`]: one connection to a daemon and the simple operations
//! (queries, roots, substitution and builds). Uploads live in
//! [`super::upload`].

use std::collections::BTreeSet;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::sync::mpsc::UnboundedSender;

use crate::hash::Sha256Hash;
use crate::store_path::StorePath;
use crate::wire::{self, WireError, MAX_LIST};

use super::error::{Error, WireContext};
use super::handshake::{handshake, ClientConfig, Negotiated, ProtocolVersion, Trust};
use super::options::ClientOptions;
use super::path_info::PathInfo;
use super::stderr::{read_stderr, DaemonEvent, StderrEnd};

/// Operation codes (reference §4.1).
pub(crate) mod op {
    pub const IS_VALID_PATH: u64 = 1;
    pub const BUILD_PATHS: u64 = 9;
    pub const ENSURE_PATH: u64 = 10;
    pub const ADD_TEMP_ROOT: u64 = 11;
    pub const ADD_INDIRECT_ROOT: u64 = 12;
    pub const SET_OPTIONS: u64 = 19;
    pub const QUERY_PATH_INFO: u64 = 26;
    pub const QUERY_VALID_PATHS: u64 = 31;
    pub const NAR_FROM_PATH: u64 = 38;
    pub const ADD_TO_STORE_NAR: u64 = 39;
    pub const QUERY_MISSING: u64 = 40;
    pub const ADD_MULTIPLE_TO_STORE: u64 = 44;
}

/// How long to wait after a daemon error for the second copy that marks a
/// fatal (pre-startWork) error, after which the daemon hangs up (§3.3).
const FATAL_PROBE: Duration = Duration::from_millis(50);

/// Build mode of BuildPaths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    /// Build or substitute what is missing.
    Normal = 0,
    /// Rebuild and repair corrupted paths (trusted clients only).
    Repair = 1,
    /// Rebuild and compare with the existing output.
    Check = 2,
}

/// Answer of QueryMissing: what realising some paths would take.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Missing {
    /// Derivations that would be built.
    pub will_build: BTreeSet<StorePath>,
    /// Paths that would be substituted.
    pub will_substitute: BTreeSet<StorePath>,
    /// Paths the daemon knows no way to produce.
    pub unknown: BTreeSet<StorePath>,
    /// Bytes to download (compressed).
    pub download_size: u64,
    /// Bytes of NARs to unpack.
    pub nar_size: u64,
}

/// A connection to a Nix daemon over any byte stream, after the handshake.
/// One operation at a time; a failure that leaves the stream out of sync
/// (I/O, protocol violation, cancellation, fatal daemon error) makes every
/// later call fail with [`Error::Poisoned`].
pub struct DaemonClient<S: AsyncRead + AsyncWrite + Unpin + Send> {
    pub(crate) stream: BufStream<S>,
    pub(crate) neg: Negotiated,
    pub(crate) events: Option<UnboundedSender<DaemonEvent>>,
    pub(crate) poisoned: bool,
    /// Set by uploads whose stream ended out of sync whatever the error.
    pub(crate) force_poison: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> DaemonClient<S> {
    /// Performs the handshake on `stream` and returns the ready client.
    pub async fn connect(stream: S, config: ClientConfig) -> Result<Self, Error> {
        let mut stream = BufStream::new(stream);
        let neg = handshake(&mut stream, &config).await?;
        Ok(Self {
            stream,
            neg,
            events: config.events,
            poisoned: false,
            force_poison: false,
        })
    }

    /// The negotiated protocol version (the minimum of both sides').
    pub fn version(&self) -> ProtocolVersion {
        self.neg.version
    }

    /// The version the daemon advertised.
    pub fn daemon_version(&self) -> ProtocolVersion {
        self.neg.daemon_version
    }

    /// The daemon's Nix version, e.g. `2.8.0` (protocol ≥ 1.33).
    pub fn nix_version(&self) -> Option<&str> {
        self.neg.nix_version.as_deref()
    }

    /// Whether the daemon trusts us (protocol ≥ 1.35).
    pub fn trust(&self) -> Option<Trust> {
        self.neg.trust
    }

    /// Features both sides support (protocol ≥ 1.38).
    pub fn features(&self) -> &[String] {
        &self.neg.features
    }

    /// Whether an earlier failure made the connection unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Marks the start of an op: until it ends cleanly the connection
    /// counts as out of sync (this also covers cancelled futures).
    pub(crate) fn begin(&mut self) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        self.poisoned = true;
        Ok(())
    }

    /// Ends an op: decides whether the connection is still in sync.
    pub(crate) async fn end<T>(&mut self, res: Result<T, Error>) -> Result<T, Error> {
        let forced = std::mem::take(&mut self.force_poison);
        self.poisoned = forced
            || match &res {
                Ok(_) => false,
                Err(Error::Daemon { .. } | Error::AlreadyValidRace { .. }) => {
                    self.daemon_hung_up().await
                }
                Err(
                    Error::NarSizeMismatch { .. }
                    | Error::NarSource { .. }
                    | Error::NarHashMismatch { .. }
                    | Error::PathNotValid(_)
                    | Error::InvalidRequest(_),
                ) => false,
                Err(_) => true,
            };
        res
    }

    /// After a daemon error: a fatal error is sent twice and followed by
    /// EOF, so anything readable right now means the connection is gone.
    async fn daemon_hung_up(&mut self) -> bool {
        match tokio::time::timeout(FATAL_PROBE, self.stream.fill_buf()).await {
            Err(_elapsed) => false,
            Ok(_) => {
                tracing::debug!("daemon closed the connection after a fatal error");
                true
            }
        }
    }

    pub(crate) async fn flush(&mut self, op: &'static str) -> Result<(), Error> {
        self.stream
            .flush()
            .await
            .map_err(WireError::from_io)
            .during(op)
    }

    /// Flushes the request and reads STDERR messages up to LAST.
    pub(crate) async fn finish_request(&mut self, op: &'static str) -> Result<(), Error> {
        self.flush(op).await?;
        match read_stderr(&mut self.stream, self.neg.version, self.events.as_ref(), op).await? {
            StderrEnd::Last => Ok(()),
            StderrEnd::Read(_) => Err(Error::protocol(op, "unexpected STDERR_READ")),
        }
    }

    /// Sends SetOptions.
    pub async fn set_options(&mut self, options: &ClientOptions) -> Result<(), Error> {
        const OP: &str = "SetOptions";
        self.begin()?;
        let res = async {
            wire::write_u64(&mut self.stream, op::SET_OPTIONS)
                .await
                .during(OP)?;
            options.write(&mut self.stream).await.during(OP)?;
            self.finish_request(OP).await
        }
        .await;
        self.end(res).await
    }

    /// Sends an op whose only argument is a path and whose answer is a u64.
    async fn path_op_u64(&mut self, code: u64, op: &'static str, path: &str) -> Result<u64, Error> {
        self.begin()?;
        let res = async {
            wire::write_u64(&mut self.stream, code).await.during(op)?;
            wire::write_bytes(&mut self.stream, path.as_bytes())
                .await
                .during(op)?;
            self.finish_request(op).await?;
            wire::read_u64(&mut self.stream).await.during(op)
        }
        .await;
        self.end(res).await
    }

    /// IsValidPath: whether `path` is valid in the daemon's store.
    pub async fn is_valid_path(&mut self, path: &StorePath) -> Result<bool, Error> {
        match self
            .path_op_u64(op::IS_VALID_PATH, "IsValidPath", &path.to_string())
            .await?
        {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.poison(Error::Wire {
                op: "IsValidPath",
                source: WireError::BadBool(v),
            })),
        }
    }

    fn poison(&mut self, e: Error) -> Error {
        self.poisoned = true;
        e
    }

    /// AddTempRoot: protects `path` from garbage collection while this
    /// connection is open (the path need not be valid).
    pub async fn add_temp_root(&mut self, path: &StorePath) -> Result<(), Error> {
        self.path_op_u64(op::ADD_TEMP_ROOT, "AddTempRoot", &path.to_string())
            .await
            .map(drop)
    }

    /// AddIndirectRoot: registers `link` (an absolute path of a symlink
    /// into the store, on the daemon's host) as a GC root.
    pub async fn add_indirect_root(&mut self, link: &str) -> Result<(), Error> {
        self.path_op_u64(op::ADD_INDIRECT_ROOT, "AddIndirectRoot", link)
            .await
            .map(drop)
    }

    /// EnsurePath: makes `path` valid, substituting it if needed.
    pub async fn ensure_path(&mut self, path: &StorePath) -> Result<(), Error> {
        self.path_op_u64(op::ENSURE_PATH, "EnsurePath", &path.to_string())
            .await
            .map(drop)
    }

    /// QueryValidPaths: the subset of `paths` that is valid; with
    /// `substitute` (sent only at protocol ≥ 1.27) the daemon first tries
    /// to substitute the missing ones.
    pub async fn query_valid_paths<'a, I>(
        &mut self,
        paths: I,
        substitute: bool,
    ) -> Result<BTreeSet<StorePath>, Error>
    where
        I: IntoIterator<Item = &'a StorePath>,
        I::IntoIter: ExactSizeIterator,
    {
        const OP: &str = "QueryValidPaths";
        self.begin()?;
        let res = async {
            wire::write_u64(&mut self.stream, op::QUERY_VALID_PATHS)
                .await
                .during(OP)?;
            wire::write_store_paths(&mut self.stream, paths)
                .await
                .during(OP)?;
            if self.neg.version.at_least(27) {
                wire::write_bool(&mut self.stream, substitute)
                    .await
                    .during(OP)?;
            }
            self.finish_request(OP).await?;
            let valid = wire::read_store_paths(&mut self.stream, MAX_LIST)
                .await
                .during(OP)?;
            Ok(valid.into_iter().collect())
        }
        .await;
        self.end(res).await
    }

    /// QueryPathInfo: the metadata of `path`, or `None` if it is not valid.
    pub async fn query_path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, Error> {
        const OP: &str = "QueryPathInfo";
        self.begin()?;
        let res = async {
            wire::write_u64(&mut self.stream, op::QUERY_PATH_INFO)
                .await
                .during(OP)?;
            wire::write_store_path(&mut self.stream, path)
                .await
                .during(OP)?;
            self.finish_request(OP).await?;
            if !wire::read_bool(&mut self.stream).await.during(OP)? {
                return Ok(None);
            }
            PathInfo::read_unkeyed(&mut self.stream, path.clone())
                .await
                .during(OP)
                .map(Some)
        }
        .await;
        self.end(res).await
    }

    /// NarFromPath: writes the NAR of `path` to `sink` and returns its
    /// metadata. Queries the path info first (an invalid path would corrupt
    /// the stream, §4.4), copies exactly narSize bytes and checks narHash.
    pub async fn nar_from_path<W>(
        &mut self,
        path: &StorePath,
        sink: &mut W,
    ) -> Result<PathInfo, Error>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let info = self
            .query_path_info(path)
            .await?
            .ok_or_else(|| Error::PathNotValid(path.clone()))?;
        self.nar_from_valid_path(path, info.nar_size, Some(info.nar_hash), sink)
            .await?;
        Ok(info)
    }

    /// NarFromPath for a path the caller knows is valid, with its narSize
    /// (and optionally narHash, checked when given). Calling this for an
    /// invalid path breaks the connection.
    pub async fn nar_from_valid_path<W>(
        &mut self,
        path: &StorePath,
        nar_size: u64,
        nar_hash: Option<Sha256Hash>,
        sink: &mut W,
    ) -> Result<(), Error>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        const OP: &str = "NarFromPath";
        self.begin()?;
        let res = async {
            wire::write_u64(&mut self.stream, op::NAR_FROM_PATH).await.during(OP)?;
            wire::write_store_path(&mut self.stream, path).await.during(OP)?;
            self.finish_request(OP).await?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut remaining = nar_size;
            while remaining > 0 {
                let want = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let n = self.stream.read(&mut buf[..want]).await.map_err(WireError::from_io).during(OP)?;
                if n == 0 {
                    return Err(Error::Wire {
                        op: OP,
                        source: WireError::Eof(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("NAR of {path} ended {remaining} bytes before its narSize {nar_size}"),
                        )),
                    });
                }
                remaining -= n as u64;
                hasher.update(&buf[..n]);
                sink.write_all(&buf[..n]).await.map_err(|source| Error::Sink { path: path.clone(), source })?;
            }
            sink.flush().await.map_err(|source| Error::Sink { path: path.clone(), source })?;
            let got = Sha256Hash(hasher.finalize().into());
            match nar_hash {
                Some(expected) if expected != got => Err(Error::NarHashMismatch { path: path.clone(), expected, got }),
                _ => Ok(()),
            }
        }
        .await;
        self.end(res).await
    }

    /// BuildPaths of opaque store paths: substitutes (or builds, for
    /// derivation outputs the daemon knows) whatever is missing.
    pub async fn build_paths(&mut self, paths: &[StorePath], mode: BuildMode) -> Result<(), Error> {
        const OP: &str = "BuildPaths";
        self.begin()?;
        let res = async {
            wire::write_u64(&mut self.stream, op::BUILD_PATHS)
                .await
                .during(OP)?;
            wire::write_store_paths(&mut self.stream, paths)
                .await
                .during(OP)?;
            wire::write_u64(&mut self.stream, mode as u64)
                .await
                .during(OP)?;
            self.finish_request(OP).await?;
            wire::read_u64(&mut self.stream).await.during(OP).map(drop)
        }
        .await;
        self.end(res).await
    }

    /// QueryMissing for opaque store paths.
    pub async fn query_missing(&mut self, paths: &[StorePath]) -> Result<Missing, Error> {
        const OP: &str = "QueryMissing";
        self.begin()?;
        let res = async {
            wire::write_u64(&mut self.stream, op::QUERY_MISSING)
                .await
                .during(OP)?;
            wire::write_store_paths(&mut self.stream, paths)
                .await
                .during(OP)?;
            self.finish_request(OP).await?;
            let s = &mut self.stream;
            Ok(Missing {
                will_build: wire::read_store_paths(s, MAX_LIST)
                    .await
                    .during(OP)?
                    .into_iter()
                    .collect(),
                will_substitute: wire::read_store_paths(s, MAX_LIST)
                    .await
                    .during(OP)?
                    .into_iter()
                    .collect(),
                unknown: wire::read_store_paths(s, MAX_LIST)
                    .await
                    .during(OP)?
                    .into_iter()
                    .collect(),
                download_size: wire::read_u64(s).await.during(OP)?,
                nar_size: wire::read_u64(s).await.during(OP)?,
            })
        }
        .await;
        self.end(res).await
    }
}
