//! One upload: workers, each with its own daemon connection, taking batches
//! from a shared [`Schedule`] and streaming them with AddMultipleToStore.
//! When the zstd control gives up on compressing, each worker moves its
//! next batches to a plain connection.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nix_wire::daemon::{self, ClientConfig, DaemonClient, PathInfo};
use nix_wire::{nar, StorePath};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::events::{CopyEvent, Events, ProgressReader};
use super::schedule::{BatchLimits, Schedule};
use super::CopyError;
use crate::compress::ZstdControl;
use crate::remote::{Connector, Said};

/// NAR chunks read ahead per path.
const CHUNK: usize = 256 * 1024;

/// Where an upload's connections go.
pub(super) struct Route<C> {
    /// The connector uploads start on (maybe compressed).
    pub connector: Arc<C>,
    /// The uncompressed one, for when compressing proves slower.
    pub plain: Arc<C>,
    /// The level control of zstd connections, if `connector` is one.
    pub control: Option<Arc<ZstdControl>>,
}

impl<C> Clone for Route<C> {
    fn clone(&self) -> Self {
        Self {
            connector: self.connector.clone(),
            plain: self.plain.clone(),
            control: self.control.clone(),
        }
    }
}

impl<C> Route<C> {
    /// Plain connections only.
    pub fn plain(connector: Arc<C>) -> Self {
        Self {
            connector: connector.clone(),
            plain: connector,
            control: None,
        }
    }

    fn reverted(&self) -> bool {
        self.control.as_ref().is_some_and(|c| c.is_reverted())
    }
}

/// One copy's upload: workers sharing a schedule.
pub(super) struct Upload<C: Connector> {
    route: Route<C>,
    schedule: Arc<Mutex<Schedule>>,
    wake: Arc<Notify>,
    limits: BatchLimits,
    dont_check_sigs: bool,
    signed_with: Option<String>,
    events: Events,
    node: String,
    cancel: CancellationToken,
}

impl<C: Connector> Clone for Upload<C> {
    fn clone(&self) -> Self {
        Self {
            route: self.route.clone(),
            schedule: self.schedule.clone(),
            wake: self.wake.clone(),
            limits: self.limits,
            dont_check_sigs: self.dont_check_sigs,
            signed_with: self.signed_with.clone(),
            events: self.events.clone(),
            node: self.node.clone(),
            cancel: self.cancel.clone(),
        }
    }
}

/// What an upload needs besides its paths.
pub(super) struct UploadSettings<'a> {
    pub dont_check_sigs: bool,
    pub signed_with: Option<String>,
    pub events: Events,
    pub node: &'a str,
    pub cancel: &'a CancellationToken,
    pub batch_bytes: Option<u64>,
}

impl<C: Connector + 'static> Upload<C> {
    /// Uploads `missing` over `jobs` connections of `route`, in batches
    /// of about a quarter of each connection's share (at least 8 MiB)
    /// unless the settings say otherwise.
    pub(super) async fn run(
        route: Route<C>,
        missing: Vec<PathInfo>,
        jobs: usize,
        settings: UploadSettings<'_>,
    ) -> Result<(), CopyError> {
        if missing.is_empty() {
            return Ok(());
        }
        let jobs = jobs.max(1).min(missing.len());
        let bytes: u64 = missing.iter().map(|i| i.nar_size).sum();
        let upload = Upload {
            route,
            schedule: Arc::new(Mutex::new(Schedule::new(missing))),
            wake: Arc::new(Notify::new()),
            limits: BatchLimits {
                bytes: settings
                    .batch_bytes
                    .unwrap_or((bytes / (jobs as u64 * 4)).max(8 << 20)),
                paths: 4096,
            },
            dont_check_sigs: settings.dont_check_sigs,
            signed_with: settings.signed_with,
            events: settings.events,
            node: settings.node.to_owned(),
            cancel: settings.cancel.child_token(),
        };
        upload.workers(jobs).await
    }

    /// Runs `jobs` workers until everything is uploaded or one fails; the
    /// first failure cancels the others. Connections stay open until all
    /// workers are done, so their temp roots cover every imported path.
    async fn workers(self, jobs: usize) -> Result<(), CopyError> {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..jobs {
            let worker = self.clone();
            set.spawn(async move { worker.work().await });
        }
        let mut first_error = None;
        let mut connections = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(conns)) => connections.extend(conns),
                Ok(Err(e)) => {
                    self.cancel.cancel();
                    first_error.get_or_insert(e);
                }
                Err(join) => {
                    self.cancel.cancel();
                    first_error.get_or_insert(CopyError::Remote {
                        node: self.node.clone(),
                        source: daemon::Error::Protocol {
                            op: "upload worker",
                            detail: join.to_string(),
                        },
                    });
                }
            }
        }
        // Each daemon gets its end-of-file (a dropped connection would hold
        // one of the node's SSH sessions until the whole session ends).
        let closing = connections
            .into_iter()
            .map(|c| tokio::time::timeout(std::time::Duration::from_secs(10), c.close()));
        futures_util::future::join_all(closing).await;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes batches until none are left; returns its connections so the
    /// caller can keep them (and their temp roots) open a little longer.
    async fn work(&self) -> Result<Vec<DaemonClient<C::Stream>>, CopyError> {
        // The connection, whether it is the route's plain one, and what its
        // far end says on stderr.
        let mut client: Option<(DaemonClient<C::Stream>, bool, Option<Said>)> = None;
        let mut retired = Vec::new();
        loop {
            let Some(batch) = self.next_batch().await? else {
                retired.extend(client.map(|c| c.0));
                return Ok(retired);
            };
            let plain = self.route.reverted();
            if client.as_ref().is_some_and(|c| c.1 != plain) {
                retired.extend(client.take().map(|c| c.0));
            }
            let conn = match client.as_mut() {
                Some(c) => &mut c.0,
                None => {
                    let connector = match plain {
                        true => &self.route.plain,
                        false => &self.route.connector,
                    };
                    let (conn, said) = self.connect(connector).await?;
                    &mut client.insert((conn, plain, said)).0
                }
            };
            let infos: Vec<PathInfo> = {
                let s = self.lock();
                batch.iter().map(|&i| s.info(i).clone()).collect()
            };
            let result = tokio::select! {
                r = self.send(conn, &infos) => r,
                () = self.cancel.cancelled() => return Err(CopyError::Cancelled { node: self.node.clone() }),
            };
            match result {
                Ok(()) => {
                    self.lock().complete(&batch);
                    self.events.send(CopyEvent::PathsDone {
                        paths: infos.into_iter().map(|i| i.path).collect(),
                    });
                }
                Err(daemon::Error::AlreadyValidRace { .. }) => {
                    tracing::debug!(node = %self.node, "batch hit Nix bug #6253 (path became valid meanwhile); retrying the rest");
                    let paths: Vec<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
                    let valid = conn
                        .query_valid_paths(&paths, false)
                        .await
                        .map_err(|e| self.remote(e))?;
                    let valid_idx: Vec<usize> = batch
                        .iter()
                        .zip(&infos)
                        .filter(|(_, info)| valid.contains(&info.path))
                        .map(|(&i, _)| i)
                        .collect();
                    self.lock().retry(&batch, &valid_idx);
                }
                Err(e) => {
                    let said = client.as_ref().and_then(|c| c.2.clone());
                    return Err(self.explain(self.classify(e), said).await);
                }
            }
            self.wake.notify_waiters();
        }
    }

    /// The next batch for this worker, waiting while other batches in
    /// flight may unlock work; `None` when everything is done.
    async fn next_batch(&self) -> Result<Option<Vec<usize>>, CopyError> {
        loop {
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            {
                let mut s = self.lock();
                if s.is_finished() {
                    return Ok(None);
                }
                let batch = s.next_batch(self.limits);
                if !batch.is_empty() {
                    return Ok(Some(batch));
                }
                if !s.has_in_flight() {
                    return Err(CopyError::Cycle(s.unfinished()));
                }
            }
            tokio::select! {
                () = wake => {}
                () = self.cancel.cancelled() => return Err(CopyError::Cancelled { node: self.node.clone() }),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        // A worker panicking while holding the lock would poison it; the
        // schedule's state is still consistent, so carry on.
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connect(
        &self,
        connector: &C,
    ) -> Result<(DaemonClient<C::Stream>, Option<Said>), CopyError> {
        let stream = connector
            .connect()
            .await
            .map_err(|source| CopyError::Connect {
                node: self.node.clone(),
                source,
            })?;
        let said = connector.said(&stream);
        match DaemonClient::connect(stream, ClientConfig::default()).await {
            Ok(c) => Ok((c, said)),
            Err(e) => Err(self.explain(self.remote(e), said).await),
        }
    }

    /// `e` with what the connection's far end said on stderr, when the
    /// connection broke (the daemon, or the receiver, gave up: its last
    /// words come a moment after the stream ends).
    async fn explain(&self, e: CopyError, said: Option<Said>) -> CopyError {
        let (node, source, said) = match (e, said) {
            (CopyError::Remote { node, source }, Some(said)) => (node, source, said),
            (e, _) => return e,
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        match said() {
            s if s.is_empty() => CopyError::Remote { node, source },
            said => CopyError::Connection { node, source, said },
        }
    }

    async fn send(
        &self,
        conn: &mut DaemonClient<C::Stream>,
        infos: &[PathInfo],
    ) -> Result<(), daemon::Error> {
        send_batch(conn, infos, &self.events, self.dont_check_sigs).await
    }

    fn remote(&self, source: daemon::Error) -> CopyError {
        CopyError::Remote {
            node: self.node.clone(),
            source,
        }
    }

    fn classify(&self, e: daemon::Error) -> CopyError {
        classify(e, &self.node, self.signed_with.as_ref(), || {
            self.lock().first_unfinished()
        })
    }
}

/// Streams one batch (in an order the daemon can import) in one
/// AddMultipleToStore (one AddToStoreNar per path on daemons older than Nix
/// 2.4), each NAR encoded from the local filesystem as it goes.
pub(super) async fn send_batch<S>(
    conn: &mut DaemonClient<S>,
    infos: &[PathInfo],
    events: &Events,
    dont_check_sigs: bool,
) -> Result<(), daemon::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let events = events.clone();
    let items = infos.iter().cloned().map(move |info: PathInfo| {
        events.send(CopyEvent::PathStarted {
            path: info.path.clone(),
            nar_size: info.nar_size,
        });
        let nar = nar::encode_async_unhashed(PathBuf::from(info.path.to_absolute()), CHUNK);
        (info, ProgressReader::new(nar, events.clone()))
    });
    conn.add_multiple_to_store(items, false, dont_check_sigs)
        .await
}

/// Recognises the node refusing unsigned paths; `first` names the path when
/// the daemon's message does not.
pub(super) fn classify(
    e: daemon::Error,
    node: &str,
    signed_with: Option<&String>,
    mut first: impl FnMut() -> Option<StorePath>,
) -> CopyError {
    if let Some(de) = e.daemon_error() {
        let message = de.message();
        let named = || message.split('\'').find_map(|s| StorePath::parse(s).ok());
        if message.contains("hash mismatch importing path") {
            if let Some(path) = named().or_else(&mut first) {
                return CopyError::LocalModified {
                    node: node.to_owned(),
                    path,
                    message,
                };
            }
        }
        if message.contains("lacks a valid signature")
            || message.contains("lacks a signature by a trusted key")
        {
            let path = named().or_else(first);
            if let Some(path) = path {
                return CopyError::Untrusted {
                    node: node.to_owned(),
                    path,
                    message,
                    signed_with: signed_with.cloned(),
                };
            }
        }
    }
    CopyError::Remote {
        node: node.to_owned(),
        source: e,
    }
}
