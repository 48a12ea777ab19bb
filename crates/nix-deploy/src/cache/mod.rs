//! Pushing closures to a binary cache (`cluster.cache`), so that nodes
//! substitute from it instead of each receiving every path from the
//! deployer. The cache is written in Nix's binary-cache format: a signed
//! `<hash>.narinfo` per path and its compressed NAR under `nar/`.
//!
//! A push asks the cache which narinfos it has (HEAD requests, many at
//! once), compresses the missing NARs from the local filesystem into
//! temporary files (`spool`; zstd's level follows whichever of
//! compressing and uploading is slower) and uploads them `jobs` at a time,
//! references first. A path's narinfo goes up as soon as its NAR is there
//! and its references' narinfos are: a cache never offers a path it can't
//! give the closure of, even after an interrupted push, and nodes can
//! substitute each path while the rest is still uploading
//! ([`CacheEvent::Available`]). Each narinfo carries the path's own
//! signatures plus the deployer's, which nodes trust (`deploy prepare`).
//! `remote` owns the URLs and requests.

mod remote;
mod spool;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use nix_wire::daemon::{self, DaemonClient, PathInfo};
use nix_wire::nar::NarError;
use nix_wire::narinfo::{self, NarFile, CACHE_INFO};
use nix_wire::signing::{FingerprintError, SecretKey};
use nix_wire::StorePath;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::closure::{closure_infos, ClosureError};
pub use remote::{BinaryCache, CacheCredentials};
pub use spool::NarCompression;

/// HEAD requests (and narinfo uploads) in flight at once.
const QUERIES_AT_ONCE: usize = 16;

/// Attempts per upload: a refused connection or a 5xx is retried.
const ATTEMPTS: u32 = 3;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache's URL can't be used.
    #[error("binary cache {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A request did not complete.
    #[error(
        "binary cache {cache}: {key}: {source}: check that the cache is up and reachable from here"
    )]
    Request {
        /// The cache.
        cache: String,
        /// The file.
        key: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// A request got no answer in time.
    #[error(
        "binary cache {cache}: {key}: no answer in time: check that the cache is up and \
         answering, or deploy with --no-cache"
    )]
    TimedOut {
        /// The cache.
        cache: String,
        /// The file.
        key: String,
    },
    /// The cache refused a request.
    #[error(
        "binary cache {cache}: {method} {key} answered HTTP {status}{hint}",
        hint = match status {
            401 | 403 => ": check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                         for s3://, NIX_DEPLOY_CACHE_TOKEN for HTTP) and that they may write",
            405 => ": the server does not take PUT (nginx needs `dav_methods PUT`)",
            _ => "",
        }
    )]
    Status {
        /// The cache.
        cache: String,
        /// The file.
        key: String,
        /// The request's method.
        method: &'static str,
        /// The HTTP status.
        status: u16,
    },
    /// Reading the local store failed.
    #[error("local store: {0}")]
    Local(#[from] daemon::Error),
    /// A path to push is not in the local store.
    #[error("{0} is not valid in the local store: build it first")]
    NotInLocalStore(String),
    /// A NAR could not be written to its temporary file.
    #[error("compressing the NAR of {path}: {source}")]
    Nar {
        /// The store path.
        path: String,
        /// Why.
        #[source]
        source: NarError,
    },
    /// A temporary file could not be read back.
    #[error("{}: {source}", file.display())]
    Spool {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path's files no longer match its registered NAR hash.
    #[error(
        "{path}: its files do not match the NAR hash the local store registered: \
         run `nix-store --verify --check-contents --repair`"
    )]
    Corrupt {
        /// The store path.
        path: String,
    },
    /// The path can't be signed.
    #[error(transparent)]
    Sign(#[from] FingerprintError),
    /// The push was cancelled.
    #[error("pushing to the binary cache was cancelled")]
    Cancelled,
}

impl CacheError {
    /// Whether trying the same request again may succeed.
    fn transient(&self) -> bool {
        match self {
            CacheError::Request { source, .. } => !source.is_builder(),
            CacheError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// How a push behaves.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// NAR uploads at once.
    pub jobs: usize,
    /// How NARs are compressed.
    pub compression: NarCompression,
    /// Signs every pushed narinfo (besides the path's own signatures).
    pub signing_key: Arc<SecretKey>,
}

/// Progress of a push, in order of occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// The cache was asked which paths it has.
    Checked {
        /// Paths in the closures.
        paths: usize,
        /// Paths the cache lacks.
        missing: usize,
        /// Their NAR bytes.
        missing_nar_bytes: u64,
    },
    /// A path's compressed NAR is in the cache (its narinfo follows once
    /// its references' are there).
    NarUploaded {
        /// The path.
        path: StorePath,
        /// Its NAR's size.
        nar_size: u64,
        /// The compressed file's size.
        file_size: u64,
    },
    /// These paths' narinfos are in the cache, after their references':
    /// nodes can substitute them now.
    Available {
        /// The paths.
        paths: Vec<StorePath>,
    },
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// Paths in the closures.
    pub paths: usize,
    /// Paths the cache already had.
    pub present: usize,
    /// Paths uploaded.
    pub uploaded: usize,
    /// NAR bytes of the uploaded paths.
    pub nar_bytes: u64,
    /// Compressed bytes uploaded.
    pub file_bytes: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// What a cache lacks of some closures (the preview of a push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lacking {
    /// Paths in the closures.
    pub paths: usize,
    /// Paths the cache lacks.
    pub missing: usize,
    /// Their NAR bytes.
    pub missing_nar_bytes: u64,
}

/// Asks `cache` which paths of the closures of `roots` (read from the
/// `local` store) it lacks, changing nothing.
pub async fn lacks<S>(
    cache: &BinaryCache,
    local: &mut DaemonClient<S>,
    roots: &[StorePath],
) -> Result<Lacking, CacheError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let infos = local_closure(local, roots).await?;
    let missing = lacking(cache, &infos).await?;
    Ok(Lacking {
        paths: infos.len(),
        missing: missing.len(),
        missing_nar_bytes: missing.iter().map(|p| infos[p].nar_size).sum(),
    })
}

/// The closures of `roots` with their path infos, from the local store.
async fn local_closure<S>(
    local: &mut DaemonClient<S>,
    roots: &[StorePath],
) -> Result<BTreeMap<StorePath, PathInfo>, CacheError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    closure_infos(local, roots).await.map_err(|e| match e {
        ClosureError::NotValid(p) => CacheError::NotInLocalStore(p.to_absolute()),
        ClosureError::Daemon(e) => CacheError::Local(e),
    })
}

/// Pushes the closures of `roots` (read from the `local` store) to
/// `cache`: what it lacks is uploaded, signed with `opts.signing_key`.
pub async fn push<S>(
    cache: &BinaryCache,
    local: &mut DaemonClient<S>,
    roots: &[StorePath],
    opts: &PushOptions,
    events: Option<UnboundedSender<CacheEvent>>,
    cancel: &CancellationToken,
) -> Result<PushReport, CacheError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let start = Instant::now();
    let send = |e| {
        if let Some(tx) = &events {
            let _ = tx.send(e);
        }
    };
    let infos = local_closure(local, roots).await?;
    let work = async {
        if !retrying(|| cache.has("nix-cache-info")).await? {
            cache
                .put_bytes("nix-cache-info", "text/x-nix-cache-info", CACHE_INFO.into())
                .await?;
        }
        let missing = lacking(cache, &infos).await?;
        let missing_nar_bytes = missing.iter().map(|p| infos[p].nar_size).sum();
        send(CacheEvent::Checked {
            paths: infos.len(),
            missing: missing.len(),
            missing_nar_bytes,
        });
        let file_bytes = upload(cache, &infos, &missing, opts, &send).await?;
        Ok(PushReport {
            paths: infos.len(),
            present: infos.len() - missing.len(),
            uploaded: missing.len(),
            nar_bytes: missing_nar_bytes,
            file_bytes,
            elapsed: start.elapsed(),
        })
    };
    tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err(CacheError::Cancelled),
    }
}

// The streams below map owned paths with `move` closures: a closure
// taking `&StorePath` makes the future's Send-ness depend on every
// lifetime, which rustc can't prove for a caller that spawns the deploy.

/// The paths of `infos` whose narinfo the cache lacks.
async fn lacking(
    cache: &BinaryCache,
    infos: &BTreeMap<StorePath, PathInfo>,
) -> Result<BTreeSet<StorePath>, CacheError> {
    futures_util::stream::iter(infos.keys().cloned())
        .map(move |path| async move {
            let key = format!("{}.narinfo", path.hash_part());
            let has = retrying(|| cache.has(&key)).await?;
            Ok::<_, CacheError>((!has).then_some(path))
        })
        .buffer_unordered(QUERIES_AT_ONCE)
        .try_filter_map(|p| async move { Ok(p) })
        .try_collect()
        .await
}

/// Uploads the NARs of `missing`, `opts.jobs` at a time, started in
/// [`layers`] order, and each narinfo as soon as its NAR is there and its
/// missing references are listed, telling `send` which paths became
/// available; returns the compressed bytes uploaded.
async fn upload(
    cache: &BinaryCache,
    infos: &BTreeMap<StorePath, PathInfo>,
    missing: &BTreeSet<StorePath>,
    opts: &PushOptions,
    send: &(impl Fn(CacheEvent) + Sync),
) -> Result<u64, CacheError> {
    let compression = opts.compression;
    let level = &spool::Level::new();
    let order = layers(infos, missing).into_iter().flatten();
    let mut nars = futures_util::stream::iter(order)
        .map(move |path| async move {
            let info = &infos[&path];
            let file = upload_nar(cache, info, compression, level).await?;
            send(CacheEvent::NarUploaded {
                path: path.clone(),
                nar_size: info.nar_size,
                file_size: file.file_size,
            });
            Ok::<_, CacheError>((path, file))
        })
        .buffer_unordered(opts.jobs.max(1));
    let mut waiting: BTreeMap<StorePath, NarFile> = BTreeMap::new();
    let mut listed: BTreeSet<StorePath> = BTreeSet::new();
    let mut file_bytes = 0;
    while let Some(done) = nars.next().await {
        let (path, file) = done?;
        file_bytes += file.file_size;
        waiting.insert(path, file);
        // In rounds: a narinfo goes up once its references' are up.
        loop {
            let (round, rest): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut waiting)
                .into_iter()
                .partition(|(p, _)| {
                    infos[p]
                        .references
                        .iter()
                        .all(|r| r == p || !missing.contains(r) || listed.contains(r))
                });
            waiting = rest;
            if round.is_empty() {
                break;
            }
            listed.extend(publish_narinfos(cache, infos, round, &opts.signing_key, send).await?);
        }
    }
    // Only a reference cycle (which stores don't make) leaves some waiting.
    if !waiting.is_empty() {
        publish_narinfos(cache, infos, waiting, &opts.signing_key, send).await?;
    }
    Ok(file_bytes)
}

/// Uploads the narinfos of one round and tells `send` these paths are
/// available; returns them.
async fn publish_narinfos(
    cache: &BinaryCache,
    infos: &BTreeMap<StorePath, PathInfo>,
    round: BTreeMap<StorePath, NarFile>,
    key: &SecretKey,
    send: &(impl Fn(CacheEvent) + Sync),
) -> Result<Vec<StorePath>, CacheError> {
    let paths: Vec<StorePath> = round.keys().cloned().collect();
    // Owned items: a borrowing closure here makes the deploy's future not Send.
    futures_util::stream::iter(round)
        .map(move |(path, file)| async move {
            upload_narinfo(cache, &infos[&path], &file, key).await
        })
        .buffer_unordered(QUERIES_AT_ONCE)
        .try_collect::<()>()
        .await?;
    send(CacheEvent::Available {
        paths: paths.clone(),
    });
    Ok(paths)
}

/// `missing` in layers: each path after every missing path it refers to.
fn layers(
    infos: &BTreeMap<StorePath, PathInfo>,
    missing: &BTreeSet<StorePath>,
) -> Vec<Vec<StorePath>> {
    let mut depth_of: BTreeMap<&StorePath, usize> = BTreeMap::new();
    let mut out: Vec<Vec<&StorePath>> = Vec::new();
    let mut left: Vec<&StorePath> = missing.iter().collect();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|path| {
            let refs = infos[*path]
                .references
                .iter()
                .filter(|r| *r != *path && missing.contains(*r));
            let mut depth = 0;
            for r in refs {
                match depth_of.get(r) {
                    Some(d) => depth = depth.max(d + 1),
                    None => return true,
                }
            }
            depth_of.insert(path, depth);
            if out.len() <= depth {
                out.resize_with(depth + 1, Vec::new);
            }
            out[depth].push(path);
            false
        });
        // References always form a DAG; should a store say otherwise, the
        // rest goes last rather than never.
        if left.len() == before {
            out.push(std::mem::take(&mut left));
        }
    }
    out.into_iter()
        .map(|l| l.into_iter().cloned().collect())
        .collect()
}

/// Compresses and uploads one path's NAR, retrying transient failures.
async fn upload_nar(
    cache: &BinaryCache,
    info: &PathInfo,
    compression: NarCompression,
    level: &spool::Level,
) -> Result<NarFile, CacheError> {
    let source = PathBuf::from(info.path.to_absolute());
    let (zstd_level, started) = (level.get(), Instant::now());
    // Dropping this future (a cancelled push) stops the compression, which
    // the runtime would otherwise wait for when it shuts down.
    let stop = StopOnDrop(Arc::default());
    let flag = stop.0.clone();
    let spooled =
        tokio::task::spawn_blocking(move || spool::spool(&source, compression, zstd_level, flag))
            .await
            .map_err(|e| CacheError::Nar {
                path: info.path.to_absolute(),
                source: NarError::Write(std::io::Error::other(e.to_string())),
            })?
            .map_err(|source| CacheError::Nar {
                path: info.path.to_absolute(),
                source,
            })?;
    if spooled.nar.sha256 != info.nar_hash || spooled.nar.size != info.nar_size {
        return Err(CacheError::Corrupt {
            path: info.path.to_absolute(),
        });
    }
    let file = NarFile {
        url: NarFile::conventional_url(&spooled.file_hash, compression.extension()),
        compression: compression.nix_name(),
        file_hash: spooled.file_hash,
        file_size: spooled.file_size,
    };
    let compressed = started.elapsed();
    retrying(|| cache.put_file(&file.url, "application/x-nix-nar", spooled.file.path())).await?;
    level.observe(info.nar_size, compressed, started.elapsed() - compressed);
    Ok(file)
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Signs and uploads one path's narinfo.
async fn upload_narinfo(
    cache: &BinaryCache,
    info: &PathInfo,
    file: &NarFile,
    key: &SecretKey,
) -> Result<(), CacheError> {
    let mut sigs = info.signatures.clone();
    sigs.retain(|s| !s.starts_with(&format!("{}:", key.name())));
    sigs.insert(key.sign(info)?);
    let text = narinfo::render(info, file, &sigs);
    let key = narinfo::key(info);
    retrying(|| cache.put_bytes(&key, "text/x-nix-narinfo", text.clone().into())).await
}

/// Runs `attempt` until it succeeds, fails for good, or [`ATTEMPTS`] ran.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, CacheError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CacheError>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if e.transient() && tries < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(tries))).await;
                tries += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix_wire::Sha256Hash;

    fn info(name: &str, refs: &[&str]) -> (StorePath, PathInfo) {
        let p = |n: &str| StorePath::from_base_name(&format!("{:0<32}-{n}", n.len())).unwrap();
        let path = p(name);
        let info = PathInfo {
            path: path.clone(),
            deriver: None,
            nar_hash: Sha256Hash::digest(name.as_bytes()),
            references: refs.iter().map(|r| p(r)).chain([path.clone()]).collect(),
            registration_time: 0,
            nar_size: 8,
            ultimate: false,
            signatures: BTreeSet::new(),
            ca: None,
        };
        (path, info)
    }

    #[test]
    fn layers_put_each_path_after_its_missing_references() {
        let infos: BTreeMap<_, _> = [
            info("a", &[]),
            info("bb", &["a"]),
            info("ccc", &["bb", "a"]),
            info("dddd", &["a"]),
            info("eeeee", &[]),
        ]
        .into_iter()
        .collect();
        // `a` is in the cache already: `bb` and `dddd` don't wait for it.
        let missing: BTreeSet<StorePath> =
            infos.keys().filter(|p| p.name() != "a").cloned().collect();
        let layers = layers(&infos, &missing);
        let names: Vec<Vec<&str>> = layers
            .iter()
            .map(|l| l.iter().map(|p| p.name()).collect())
            .collect();
        assert_eq!(names, vec![vec!["bb", "dddd", "eeeee"], vec!["ccc"]]);
    }
}
