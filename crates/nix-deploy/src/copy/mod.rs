//! The copy engine: pushes the closure of some local store paths to a
//! node's store. It computes the closure locally, asks the node once which
//! paths it has, then streams the missing NARs straight from the local
//! filesystem (our own encoder: no NAR is ever held in memory) over several
//! daemon connections at once, in an order where every path arrives after
//! its references. Temp roots protect the paths on the node until the
//! [`NodeStore`] is dropped, so a garbage collection there can't delete them
//! before they are rooted by activation.
//!
//! How the bytes travel is decided from the link, measured once there is
//! something to send ([`crate::link`]): the number of connections and whether to
//! compress ([`plan`]); compressed uploads use zstd through the node's
//! receiver, pushed first if it is missing, else a zlib SSH session, else
//! none (`transport`).

mod error;
mod events;
pub mod plan;
mod schedule;
mod transport;
mod upload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix_wire::daemon::{self, ClientConfig, DaemonClient, PathInfo};
use nix_wire::signing::{FingerprintError, SecretKey};
use nix_wire::StorePath;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::closure::{closure_infos, ClosureError};
use crate::compress::Receiver;
use crate::link::{LinkEstimate, ProbeError};
use crate::remote::Connector;
pub use error::CopyError;
use events::Events;
pub use events::{CompressionMethod, CopyEvent};
use upload::{Upload, UploadSettings};

/// Whether a copy compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// When the measured link is slower than [`plan::COMPRESS_BELOW`].
    #[default]
    Auto,
    /// Always (zstd through the receiver, else zlib, else not at all).
    Always,
    /// Never.
    Never,
}

/// Whether the node first fetches what its own binary caches (its
/// `substituters`) have, so that only the rest is uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Substitute {
    /// Ask the node which missing paths its caches have, on a connection
    /// of its own, and have it fetch those if it answers within
    /// `ask_within`; a node whose caches are down, unreachable or silent
    /// costs that wait at most (the question is dropped with its
    /// connection) and gets everything uploaded.
    Auto {
        /// How long the node may take to answer.
        ask_within: Duration,
    },
    /// Let the node fetch what it can, however long its caches take.
    Always,
    /// Upload everything the node lacks.
    Never,
}

/// How long [`Substitute::Auto`] waits by default for the node's caches.
pub const SUBSTITUTE_ASK_WITHIN: Duration = Duration::from_secs(10);

impl Default for Substitute {
    fn default() -> Self {
        Substitute::Auto {
            ask_within: SUBSTITUTE_ASK_WITHIN,
        }
    }
}

/// How a copy behaves.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Upload connections; `None` (the default) sizes them from the
    /// measured link ([`plan`]).
    pub jobs: Option<usize>,
    /// Whether the node first fetches what its own binary caches have.
    pub substitute_on_node: Substitute,
    /// Ask the node to check signatures. When false we ask it not to, which
    /// it honours only for trusted users (root, or `trusted-users`).
    pub check_signatures: bool,
    /// Sign every uploaded path with this key (keeping its other
    /// signatures), so that a node listing the key's public half in
    /// `trusted-public-keys` accepts it from an untrusted SSH user.
    pub signing_key: Option<Arc<SecretKey>>,
    /// Whether to compress.
    pub compression: Compression,
    /// The node-side zstd receiver (the `nix-deploy-receive` package in the
    /// local store); `None`: compressed copies use zlib.
    pub receiver: Option<Receiver>,
    /// Most NAR bytes per batch (one import on the node, whose paths turn
    /// valid together); `None`: a quarter of each connection's share, at
    /// least 8 MiB. Smaller batches let whoever follows the node's store
    /// (fan-out's relays) start sooner, for a round trip more per batch.
    pub batch_bytes: Option<u64>,
    /// Paths to upload before the others, as far as their references
    /// allow: a program the node is to run while the rest arrives (fan-out
    /// sends its relay so, in the same copy as the closure).
    pub send_first: Vec<StorePath>,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Paths in the closure.
    pub closure_paths: usize,
    /// Paths the node already had (or substituted).
    pub present_paths: usize,
    /// Paths of the closure uploaded.
    pub sent_paths: usize,
    /// NAR bytes of the closure uploaded.
    pub sent_bytes: u64,
    /// Paths of the receiver's closure uploaded besides (0 when the node
    /// had it or the copy did not use it).
    pub receiver_paths: usize,
    /// Bytes zstd produced from the NARs it compressed, if it did.
    pub compressed_bytes: Option<u64>,
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
    link: Link,
}

/// What is known of the node's link: measured once, by the first copy
/// with enough to send to make it worth a few round trips.
enum Link {
    Unmeasured,
    Known(Option<LinkEstimate>),
}

/// Copies smaller than this go plain without measuring the link: the probe
/// would cost more than it could save.
const PROBE_FROM: u64 = 1 << 20;

impl<C: Connector + 'static> NodeStore<C> {
    /// Connects to the node's daemon.
    pub async fn open(connector: C) -> Result<Self, CopyError> {
        let node = connector.describe();
        let connector = Arc::new(connector);
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
            connector,
            main,
            node,
            link: Link::Unmeasured,
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

    /// The measured link, probed the first time.
    async fn link(&mut self, events: &Events) -> Option<LinkEstimate> {
        if let Link::Unmeasured = self.link {
            let estimate = match self.connector.probe().await {
                Ok(estimate) => Some(estimate),
                Err(ProbeError::NotALink) => None,
                Err(e) => {
                    events.send(CopyEvent::LinkUnmeasured {
                        reason: e.to_string(),
                    });
                    None
                }
            };
            self.link = Link::Known(estimate);
        }
        match &self.link {
            Link::Known(estimate) => estimate.clone(),
            Link::Unmeasured => None,
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
        let closure = local_closure(local, roots).await?;
        for root in roots {
            self.main
                .add_temp_root(root)
                .await
                .map_err(self.remote_err())?;
        }
        // Substituting on the node's side needs protocol 1.27.
        let substitute = match self.main.version().at_least(27) {
            true => options.substitute_on_node,
            false => Substitute::Never,
        };
        let mut present = self
            .main
            .query_valid_paths(closure.keys(), substitute == Substitute::Always)
            .await
            .map_err(self.remote_err())?;
        if let Substitute::Auto { ask_within } = substitute {
            let missing: Vec<StorePath> = closure
                .keys()
                .filter(|p| !present.contains(*p))
                .cloned()
                .collect();
            if !missing.is_empty() {
                present.extend(self.substitute(&missing, ask_within, &events).await);
            }
        }
        let mut missing: Vec<PathInfo> = closure
            .into_iter()
            .filter(|(p, _)| !present.contains(p))
            .map(|(_, info)| info)
            .collect();
        sign(&mut missing, options).map_err(CopyError::Sign)?;
        let missing_bytes: u64 = missing.iter().map(|i| i.nar_size).sum();
        let mut report = CopyReport {
            closure_paths: present.len() + missing.len(),
            present_paths: present.len(),
            sent_paths: missing.len(),
            sent_bytes: missing_bytes,
            receiver_paths: 0,
            compressed_bytes: None,
            elapsed: Duration::ZERO,
        };
        events.send(CopyEvent::Planned {
            closure_paths: report.closure_paths,
            present_paths: report.present_paths,
            missing_paths: report.sent_paths,
            missing_bytes,
        });
        if !missing.is_empty() {
            // Compressing anyway needs the node's machine, for the receiver.
            let probe = missing_bytes >= PROBE_FROM || options.compression == Compression::Always;
            let link = match probe {
                true => tokio::select! {
                    link = self.link(&events) => link,
                    () = cancel.cancelled() => return Err(CopyError::Cancelled { node: self.node.clone() }),
                },
                false => None,
            };
            let route = transport::choose(
                self,
                local,
                link.as_ref(),
                &mut missing,
                options,
                &events,
                cancel,
            )
            .await?;
            report.receiver_paths = route.receiver_paths;
            // A stable sort: the schedule takes ready paths in this order.
            missing.sort_by_key(|i| !options.send_first.contains(&i.path));
            Upload::run(
                route.route.clone(),
                missing,
                route.jobs,
                self.settings(options, events.clone(), cancel),
            )
            .await?;
            report.compressed_bytes = route.route.control.map(|c| c.output_bytes());
        }
        Ok(CopyReport {
            elapsed: start.elapsed(),
            ..report
        })
    }

    /// [`Substitute::Auto`]: asks the node, on a connection of its own,
    /// which of `missing` its caches have, and has it fetch those; returns
    /// the paths now valid there. A node that can't answer within
    /// `ask_within` (its caches down or silent) is left alone.
    async fn substitute(
        &self,
        missing: &[StorePath],
        ask_within: Duration,
        events: &Events,
    ) -> Vec<StorePath> {
        let ask = async {
            let stream = self.connector.connect().await.map_err(|e| e.to_string())?;
            let mut side = DaemonClient::connect(stream, ClientConfig::default())
                .await
                .map_err(|e| e.to_string())?;
            let found = side
                .query_missing(missing)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((side, found))
        };
        let skipped = |reason: String| {
            events.send(CopyEvent::Substituted {
                paths: 0,
                nar_bytes: 0,
                skipped: Some(reason),
            });
            Vec::new()
        };
        let (mut side, found) = match tokio::time::timeout(ask_within, ask).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                return skipped(format!("the node could not say what its caches have: {e}"))
            }
            Err(_) => {
                return skipped(format!(
                    "its binary caches did not answer within {} s",
                    ask_within.as_secs_f64()
                ))
            }
        };
        if found.will_substitute.is_empty() {
            let _ = side.close().await;
            return Vec::new();
        }
        let wanted: Vec<StorePath> = found.will_substitute.into_iter().collect();
        // The daemon fetches what it is asked to check with substitution
        // on, and answers which are valid then; a path it could not fetch
        // stays missing and is uploaded.
        let valid = match side.query_valid_paths(&wanted, true).await {
            Ok(valid) => valid,
            Err(e) => return skipped(format!("the node's substitution failed: {e}")),
        };
        let _ = side.close().await;
        let got: Vec<StorePath> = wanted.into_iter().filter(|p| valid.contains(p)).collect();
        events.send(CopyEvent::Substituted {
            paths: got.len(),
            nar_bytes: found.nar_size,
            skipped: None,
        });
        got
    }

    /// Has the node fetch `paths` from its own binary caches now, on a
    /// connection of its own, giving up after `ask_within` (e.g. as a
    /// cache receives them, before the copy proper); which became valid.
    /// Nothing with protocol below 1.27, which can't ask.
    pub async fn substitute_now(
        &self,
        paths: &[StorePath],
        ask_within: Duration,
        events: Option<UnboundedSender<CopyEvent>>,
    ) -> Vec<StorePath> {
        if paths.is_empty() || !self.main.version().at_least(27) {
            return Vec::new();
        }
        self.substitute(paths, ask_within, &Events(events)).await
    }

    fn settings<'a>(
        &'a self,
        options: &CopyOptions,
        events: Events,
        cancel: &'a CancellationToken,
    ) -> UploadSettings<'a> {
        UploadSettings {
            dont_check_sigs: !options.check_signatures,
            signed_with: options
                .signing_key
                .as_ref()
                .map(|k| k.public_key().to_string()),
            events,
            node: &self.node,
            cancel,
            batch_bytes: options.batch_bytes,
        }
    }
}

/// The closure of `roots` in the local store.
pub(crate) async fn local_closure<L>(
    local: &mut DaemonClient<L>,
    roots: &[StorePath],
) -> Result<std::collections::BTreeMap<StorePath, PathInfo>, CopyError>
where
    L: AsyncRead + AsyncWrite + Unpin + Send,
{
    closure_infos(local, roots).await.map_err(|e| match e {
        ClosureError::NotValid(path) => CopyError::NotInLocalStore { path },
        ClosureError::Daemon(e) => CopyError::Local(e),
    })
}

/// Signs `infos` with the options' key, if any (keeping other signatures).
fn sign(infos: &mut [PathInfo], options: &CopyOptions) -> Result<(), FingerprintError> {
    if let Some(key) = &options.signing_key {
        for info in infos {
            let sig = key.sign(info)?;
            info.signatures.insert(sig);
        }
    }
    Ok(())
}
