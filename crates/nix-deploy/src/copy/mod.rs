//! The copy engine: pushes the closure of some local store paths to a
//! node's store. It computes the closure locally, asks the node once which
//! paths it has, then streams the missing NARs straight from the local
//! filesystem (our own encoder: no NAR is ever held in memory) over several
//! daemon connections at once, in an order where every path arrives after
//! its references. Temp roots protect the paths on the node until the
//! [`NodeStore`] is dropped, so a garbage collection there can't delete them
//! before they are rooted by activation.

mod error;
mod events;
mod schedule;
mod slow_link;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix_wire::daemon::{self, ClientConfig, DaemonClient, PathInfo};
use nix_wire::signing::SecretKey;
use nix_wire::{nar, StorePath};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::closure::{closure_infos, ClosureError};
use crate::remote::Connector;
pub use error::CopyError;
pub use events::CopyEvent;
use events::{Events, VerifyingReader};
use schedule::{BatchLimits, Schedule};
use slow_link::SlowLink;

/// How a copy behaves.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Daemon connections uploading at once (at least 1).
    pub jobs: usize,
    /// Let the node fetch what it can from its own binary caches first
    /// and upload only the rest.
    pub substitute_on_node: bool,
    /// Ask the node to check signatures. When false we ask it not to, which
    /// it honours only for trusted users (root, or `trusted-users`).
    pub check_signatures: bool,
    /// Sign every uploaded path with this key (keeping its other
    /// signatures), so that a node listing the key's public half in
    /// `trusted-public-keys` accepts it from an untrusted SSH user.
    pub signing_key: Option<Arc<SecretKey>>,
    /// Below this many bytes per second (measured over the first batches),
    /// the rest goes over a compressed connection if the connector offers
    /// one; `None`: never switch.
    pub compress_below: Option<u64>,
}

/// The default [`CopyOptions::compress_below`]: 16 MiB/s, about 130 Mbit/s,
/// under which zlib (tens of MiB/s per core) outruns the link.
pub const DEFAULT_COMPRESS_BELOW: u64 = 16 << 20;

impl Default for CopyOptions {
    /// Four connections, no substitution, no signature checks requested,
    /// no signing, compression on links slower than
    /// [`DEFAULT_COMPRESS_BELOW`].
    fn default() -> Self {
        Self {
            jobs: 4,
            substitute_on_node: false,
            check_signatures: false,
            signing_key: None,
            compress_below: Some(DEFAULT_COMPRESS_BELOW),
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Paths in the closure.
    pub closure_paths: usize,
    /// Paths the node already had (or substituted).
    pub present_paths: usize,
    /// Paths uploaded.
    pub sent_paths: usize,
    /// NAR bytes uploaded.
    pub sent_bytes: u64,
    /// Wall-clock time of the whole copy.
    pub elapsed: Duration,
}

/// A node's store, reached through `C`: one main connection that holds the
/// temp roots of the copied closures, plus upload connections opened per
/// copy. Drop it only after the copied paths are rooted on the node.
pub struct NodeStore<C: Connector> {
    connector: Arc<C>,
    main: DaemonClient<C::Stream>,
    node: String,
}

impl<C: Connector + 'static> NodeStore<C> {
    /// Connects to the node's daemon.
    pub async fn open(connector: C) -> Result<Self, CopyError> {
        let node = connector.describe();
        let stream = connector
            .connect()
            .await
            .map_err(|source| CopyError::Connect {
                node: node.clone(),
                source,
            })?;
        let main = DaemonClient::connect(stream, ClientConfig::default())
            .await
            .map_err(|source| CopyError::Remote {
                node: node.clone(),
                source,
            })?;
        Ok(Self {
            connector: Arc::new(connector),
            main,
            node,
        })
    }

    /// The node, as named in messages.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The main daemon connection, e.g. to query the node's store.
    pub fn client(&mut self) -> &mut DaemonClient<C::Stream> {
        &mut self.main
    }

    fn remote_err(&self) -> impl Fn(daemon::Error) -> CopyError + '_ {
        |source| CopyError::Remote {
            node: self.node.clone(),
            source,
        }
    }

    /// Pushes the closure of `roots` (paths in the store of `local`) to the
    /// node. Sends nothing when the node has everything.
    pub async fn copy_closure<L>(
        &mut self,
        local: &mut DaemonClient<L>,
        roots: &[StorePath],
        options: &CopyOptions,
        events: Option<UnboundedSender<CopyEvent>>,
        cancel: &CancellationToken,
    ) -> Result<CopyReport, CopyError>
    where
        L: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let start = Instant::now();
        let events = Events(events);
        let closure = closure_infos(local, roots).await.map_err(|e| match e {
            ClosureError::NotValid(path) => CopyError::NotInLocalStore { path },
            ClosureError::Daemon(e) => CopyError::Local(e),
        })?;
        for root in roots {
            self.main
                .add_temp_root(root)
                .await
                .map_err(self.remote_err())?;
        }
        let substitute = options.substitute_on_node && self.main.version().at_least(27);
        let present = self
            .main
            .query_valid_paths(closure.keys(), substitute)
            .await
            .map_err(self.remote_err())?;
        let mut missing: Vec<PathInfo> = closure
            .into_iter()
            .filter(|(p, _)| !present.contains(p))
            .map(|(_, info)| info)
            .collect();
        if let Some(key) = &options.signing_key {
            for info in &mut missing {
                let sig = key.sign(info).map_err(CopyError::Sign)?;
                info.signatures.insert(sig);
            }
        }
        let missing_bytes: u64 = missing.iter().map(|i| i.nar_size).sum();
        let report = CopyReport {
            closure_paths: present.len() + missing.len(),
            present_paths: present.len(),
            sent_paths: missing.len(),
            sent_bytes: missing_bytes,
            elapsed: Duration::ZERO,
        };
        events.send(CopyEvent::Planned {
            closure_paths: report.closure_paths,
            present_paths: report.present_paths,
            missing_paths: report.sent_paths,
            missing_bytes,
        });
        if !missing.is_empty() {
            let jobs = options.jobs.max(1).min(missing.len());
            let limits = BatchLimits {
                bytes: (missing_bytes / (jobs as u64 * 4)).max(8 << 20),
                paths: 4096,
            };
            let upload = Upload {
                connector: self.connector.clone(),
                link: Arc::new(SlowLink::new(options.compress_below, missing_bytes)),
                schedule: Arc::new(Mutex::new(Schedule::new(missing))),
                wake: Arc::new(Notify::new()),
                limits,
                dont_check_sigs: !options.check_signatures,
                signed_with: options
                    .signing_key
                    .as_ref()
                    .map(|k| k.public_key().to_string()),
                events,
                node: self.node.clone(),
                cancel: cancel.child_token(),
            };
            upload.run(jobs).await?;
        }
        Ok(CopyReport {
            elapsed: start.elapsed(),
            ..report
        })
    }
}

/// One copy's upload: workers sharing a schedule.
struct Upload<C: Connector> {
    connector: Arc<C>,
    link: Arc<SlowLink<C>>,
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
            connector: self.connector.clone(),
            link: self.link.clone(),
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

/// NAR chunks read ahead per path.
const CHUNK: usize = 256 * 1024;

impl<C: Connector + 'static> Upload<C> {
    /// Runs `jobs` workers until everything is uploaded or one fails; the
    /// first failure cancels the others. Connections stay open until all
    /// workers are done, so their temp roots cover every imported path.
    async fn run(self, jobs: usize) -> Result<(), CopyError> {
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
        drop(connections);
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes batches until none are left; returns its connections so the
    /// caller can keep them (and their temp roots) open a little longer.
    /// Once the link proves slow, it moves to a compressed connection.
    async fn work(&self) -> Result<Vec<DaemonClient<C::Stream>>, CopyError> {
        let mut client: Option<DaemonClient<C::Stream>> = None;
        let mut retired = Vec::new();
        let mut compressed: Option<Arc<C>> = None;
        loop {
            let Some(batch) = self.next_batch().await? else {
                retired.extend(client);
                return Ok(retired);
            };
            if compressed.is_none() {
                if let Some(c) = self.link.compressed(&self.connector, &self.events).await {
                    retired.extend(client.take());
                    compressed = Some(c);
                }
            }
            let conn = match client.as_mut() {
                Some(c) => c,
                None => {
                    let connector = compressed.as_deref().unwrap_or(&self.connector);
                    client.insert(self.connect(connector).await?)
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
                    self.link.batch_done(infos.iter().map(|i| i.nar_size).sum());
                    self.lock().complete(&batch);
                    self.events
                        .send(CopyEvent::PathsDone { paths: batch.len() });
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
                Err(e) => return Err(self.classify(e)),
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
                let limits = match self.link.probing() {
                    true => BatchLimits {
                        bytes: self.limits.bytes.min(slow_link::PROBE_BYTES),
                        ..self.limits
                    },
                    false => self.limits,
                };
                let batch = s.next_batch(limits);
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

    async fn connect(&self, connector: &C) -> Result<DaemonClient<C::Stream>, CopyError> {
        let stream = connector
            .connect()
            .await
            .map_err(|source| CopyError::Connect {
                node: self.node.clone(),
                source,
            })?;
        DaemonClient::connect(stream, ClientConfig::default())
            .await
            .map_err(|e| self.remote(e))
    }

    /// Streams one batch in one AddMultipleToStore (one AddToStoreNar per
    /// path on daemons older than Nix 2.4), each NAR encoded from the local
    /// filesystem as it goes.
    async fn send(
        &self,
        conn: &mut DaemonClient<C::Stream>,
        infos: &[PathInfo],
    ) -> Result<(), daemon::Error> {
        let events = self.events.clone();
        let items = infos.iter().cloned().map(move |info: PathInfo| {
            events.send(CopyEvent::PathStarted {
                path: info.path.clone(),
                nar_size: info.nar_size,
            });
            let (reader, stats) = nar::encode_async(PathBuf::from(info.path.to_absolute()), CHUNK);
            let verified = VerifyingReader::new(
                reader,
                stats,
                info.path.clone(),
                info.nar_hash,
                events.clone(),
            );
            (info, verified)
        });
        conn.add_multiple_to_store(items, false, self.dont_check_sigs)
            .await
    }

    fn remote(&self, source: daemon::Error) -> CopyError {
        CopyError::Remote {
            node: self.node.clone(),
            source,
        }
    }

    /// Recognises the node refusing unsigned paths.
    fn classify(&self, e: daemon::Error) -> CopyError {
        if let Some(de) = e.daemon_error() {
            let message = de.message();
            if message.contains("lacks a valid signature")
                || message.contains("lacks a signature by a trusted key")
            {
                let path = message
                    .split('\'')
                    .find_map(|s| StorePath::parse(s).ok())
                    .or_else(|| self.lock().first_unfinished());
                if let Some(path) = path {
                    return CopyError::Untrusted {
                        node: self.node.clone(),
                        path,
                        message,
                        signed_with: self.signed_with.clone(),
                    };
                }
            }
        }
        self.remote(e)
    }
}
