//! The simple operations of [`DaemonClient`]: validity and metadata
//! queries, NAR download, GC roots, substitution and builds.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::hash::Sha256Hash;
use crate::store_path::StorePath;
use crate::wire::{self, WireError, MAX_PATHS};

use super::client::DaemonClient;
use super::error::{Error, WireContext};
use super::opcode as op;
use super::path_info::PathInfo;

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

/// Requests [`DaemonClient::query_path_infos`] sends before reading
/// answers: few enough that the requests (under 10 KiB) never fill a pipe
/// or SSH window while the daemon waits for us to read its answers.
pub const PIPELINE_GROUP: usize = 64;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> DaemonClient<S> {
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
            let valid = wire::read_store_paths(&mut self.stream, MAX_PATHS)
                .await
                .during(OP)?;
            Ok(valid.into_iter().collect())
        }
        .await;
        self.end(res).await
    }

    /// QueryPathInfo: the metadata of `path`, or `None` if it is not valid.
    /// Every supported version (≥ 1.21) answers with a validity flag.
    pub async fn query_path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, Error> {
        self.begin()?;
        let res = async {
            self.request_path_info(path).await?;
            self.answer_path_info(path).await
        }
        .await;
        self.end(res).await
    }

    /// Writes one QueryPathInfo request (not flushed).
    async fn request_path_info(&mut self, path: &StorePath) -> Result<(), Error> {
        const OP: &str = "QueryPathInfo";
        wire::write_u64(&mut self.stream, op::QUERY_PATH_INFO)
            .await
            .during(OP)?;
        wire::write_store_path(&mut self.stream, path)
            .await
            .during(OP)
    }

    /// Flushes, then reads the answer to a QueryPathInfo for `path`.
    async fn answer_path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, Error> {
        const OP: &str = "QueryPathInfo";
        self.finish_request(OP).await?;
        if !wire::read_bool(&mut self.stream).await.during(OP)? {
            return Ok(None);
        }
        PathInfo::read_unkeyed(&mut self.stream, path.clone())
            .await
            .during(OP)
            .map(Some)
    }

    /// QueryPathInfo for many paths, pipelined: requests go out in groups
    /// of [`PIPELINE_GROUP`] and the answers are read in order, so a group
    /// costs one round trip instead of one per path. Any error leaves the
    /// connection unusable (answers may still be in flight).
    pub async fn query_path_infos(
        &mut self,
        paths: &[StorePath],
    ) -> Result<Vec<Option<PathInfo>>, Error> {
        self.begin()?;
        let res = async {
            let mut out = Vec::with_capacity(paths.len());
            for group in paths.chunks(PIPELINE_GROUP) {
                for path in group {
                    self.request_path_info(path).await?;
                }
                for path in group {
                    out.push(self.answer_path_info(path).await?);
                }
            }
            Ok(out)
        }
        .await;
        self.force_poison |= res.is_err();
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
                will_build: wire::read_store_paths(s, MAX_PATHS)
                    .await
                    .during(OP)?
                    .into_iter()
                    .collect(),
                will_substitute: wire::read_store_paths(s, MAX_PATHS)
                    .await
                    .during(OP)?
                    .into_iter()
                    .collect(),
                unknown: wire::read_store_paths(s, MAX_PATHS)
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
