//! Fan-out: each missing path crosses the deployer's uplink once. The
//! deployer copies the union of the nodes' closures to one node, the seed
//! (the node lacking most, see [`tree`]); every other node is fed node to
//! node, over the nodes' own network, by a relay (`nix-deploy-relay`, run
//! on the feeding node over the deployer's SSH session, see [`protocol`])
//! that uses the same copy engine from that node's store to the fed node's
//! daemon. Feeding is pipelined: as soon as a batch of paths is valid on a
//! feeding node, the relay sends its children what they need of it, so
//! the nodes fill while the seed still receives.
//!
//! The relay's key is its own (made on the feeding node, never leaving the
//! relay) and is authorized on the fed node for this edge only, restricted
//! to the relay's address and the daemon command, and expiring by itself
//! (`authorize`). Nothing is assumed of the nodes' network: a relay that
//! can't reach its node, or fails later, leaves that node a direct copy
//! from the deployer of what it still lacks, as does a feeding node that
//! fails. Nodes of a deploy take their [`Seat`] together; with fewer than
//! two nodes lacking anything there is nothing to fan out and each copies
//! directly.

mod authorize;
mod edge;
pub mod protocol;
pub mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deploy_remote::quote;
use deploy_ssh::SshSession;
use nix_wire::daemon::{DaemonClient, PathInfo};
use nix_wire::StorePath;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, OnceCell};
use tokio_util::sync::CancellationToken;

pub use authorize::{Authorization, AuthorizeError};
pub use edge::EdgeError;
use edge::{Edge, EdgeSettings};
use protocol::Progress;
use tree::Tree;

use crate::closure::closure_within;
use crate::copy::{local_closure, CopyError, CopyEvent, CopyOptions, CopyReport, NodeStore};
use crate::remote::SshConnector;

/// The relay, as a package in the local store
/// (`<package>/bin/nix-deploy-relay`), built for the nodes' machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    package: StorePath,
}

impl Relay {
    /// The relay in `package`.
    pub fn new(package: StorePath) -> Self {
        Self { package }
    }

    /// The package's store path (it goes to feeding nodes first).
    pub fn package(&self) -> &StorePath {
        &self.package
    }

    /// The program's absolute path (the same in every store).
    pub fn program(&self) -> String {
        format!("{}/{}", self.package.to_absolute(), protocol::PROGRAM)
    }
}

/// How a deploy fans out.
#[derive(Debug, Clone)]
pub struct FanOutOptions {
    /// The relay package.
    pub relay: Relay,
    /// Nodes each node feeds at most.
    pub degree: usize,
    /// How long a relay's key stays authorized at most (it is removed when
    /// its edge is done; this bounds it after a killed deploy).
    pub key_lifetime: Duration,
}

/// Nodes each node feeds by default: on a datacenter network a node sends
/// several times what the deployer's uplink carries.
pub const DEFAULT_DEGREE: usize = 4;

/// How long a relay's key stays authorized by default.
pub const DEFAULT_KEY_LIFETIME: Duration = Duration::from_secs(3600);

/// Most NAR bytes per batch of a copy that other nodes follow: the
/// children receive a batch only once it is valid on their feeder, so the
/// last batch is what they lag behind at the end (a copy's default is a
/// quarter of each connection's share: 53 MiB of a 426 MiB closure over 2
/// connections).
pub const FOLLOWED_BATCH_BYTES: u64 = 8 << 20;

/// Where a node's missing paths come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The deployer, as the seed: the union of every node's closure.
    Seed,
    /// Another node, through its relay.
    Node(String),
    /// The deployer, directly, because the planned feed could not be used.
    Direct {
        /// Why.
        reason: String,
    },
}

/// What a node has received in this deploy, as its children follow it.
#[derive(Debug, Clone, Default)]
struct Feed {
    /// Paths valid on the node, in the order they became so.
    done: Vec<StorePath>,
    /// Whether its relay runs there (it can feed others).
    relay_ready: bool,
    /// Whether it has everything it was to receive (`Some(false)`: it failed).
    finished: Option<bool>,
}

/// A node that took its seat.
struct Member {
    session: Arc<SshSession>,
    present: BTreeSet<StorePath>,
    feed: watch::Receiver<Feed>,
}

#[derive(Default)]
struct State {
    members: BTreeMap<String, Member>,
    withdrawn: BTreeSet<String>,
    tree: Option<Arc<Option<Tree>>>,
}

/// One deploy's fan-out, shared by its node tasks.
pub struct FanOut {
    options: FanOutOptions,
    /// Each node's profile, in deploy order.
    roots: Vec<(String, StorePath)>,
    union: OnceCell<Arc<BTreeMap<StorePath, PathInfo>>>,
    state: Mutex<State>,
    /// Nodes seated or withdrawn so far.
    settled: watch::Sender<usize>,
}

/// A node's place in the fan-out. Dropping it before [`Seat::copy`]
/// withdraws the node (say, it could not be reached), so the others don't
/// wait for it.
pub struct Seat {
    fanout: Arc<FanOut>,
    name: String,
    joined: bool,
    feed: Option<watch::Sender<Feed>>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if !self.joined {
            self.fanout.settle(&self.name, None);
        }
        if let Some(feed) = &self.feed {
            feed.send_if_modified(|f| {
                let open = f.finished.is_none();
                if open {
                    f.finished = Some(false);
                }
                open
            });
        }
    }
}

/// What a node's copy needs besides its store.
pub struct SeatCopy<'a, L: AsyncRead + AsyncWrite + Unpin + Send> {
    /// The deployer's session to the node.
    pub session: &'a Arc<SshSession>,
    /// The local store.
    pub local: &'a mut DaemonClient<L>,
    /// The copy engine's options for direct copies.
    pub options: &'a CopyOptions,
    /// The command running the Nix daemon on nodes.
    pub daemon_command: &'a str,
    /// The limit for a relay's connection.
    pub connect_timeout: Duration,
    /// The node's copy events.
    pub events: mpsc::UnboundedSender<CopyEvent>,
    /// Told where the node's paths come from.
    pub source: &'a (dyn Fn(Source) + Send + Sync),
    /// The address its feeding node sends to (`None`: the one the
    /// deployer reached it at).
    pub peer_address: Option<&'a str>,
    /// The SSH port its feeding node sends to (`None`: the one the
    /// deployer reached it at).
    pub peer_port: Option<u16>,
}

impl FanOut {
    /// A fan-out over `roots` (node name, profile), in deploy order.
    pub fn new(roots: Vec<(String, StorePath)>, options: FanOutOptions) -> Arc<Self> {
        Arc::new(FanOut {
            options,
            roots,
            union: OnceCell::new(),
            state: Mutex::new(State::default()),
            settled: watch::Sender::new(0),
        })
    }

    /// `name`'s seat.
    pub fn seat(self: &Arc<Self>, name: &str) -> Seat {
        Seat {
            fanout: self.clone(),
            name: name.to_owned(),
            joined: false,
            feed: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(&self, name: &str, member: Option<Member>) {
        {
            let mut state = self.lock();
            match member {
                Some(m) => {
                    state.members.insert(name.to_owned(), m);
                }
                None => {
                    state.withdrawn.insert(name.to_owned());
                }
            }
        }
        self.settled.send_modify(|n| *n += 1);
    }

    /// The tree, once every node took its seat or withdrew.
    async fn tree(&self) -> Arc<Option<Tree>> {
        let expected = self.roots.len();
        let mut settled = self.settled.subscribe();
        let _ = settled.wait_for(|n| *n >= expected).await;
        let mut state = self.lock();
        if let Some(tree) = &state.tree {
            return tree.clone();
        }
        let union = self.union.get().cloned().unwrap_or_default();
        let lacking: Vec<(String, u64)> = self
            .roots
            .iter()
            .filter_map(|(name, root)| {
                let m = state.members.get(name)?;
                let bytes = closure_within(&union, std::slice::from_ref(root))
                    .iter()
                    .filter(|p| !m.present.contains(*p))
                    .filter_map(|p| union.get(p))
                    .map(|i| i.nar_size)
                    .sum();
                Some((name.clone(), bytes))
            })
            .collect();
        let tree = Arc::new(Tree::plan(&lacking, self.options.degree));
        state.tree = Some(tree.clone());
        tree
    }

    /// The roots position `i` of `tree` must receive: those of its subtree,
    /// and the relay when it feeds others.
    fn roots_of(&self, tree: &Tree, i: usize) -> Vec<StorePath> {
        let names: BTreeSet<&String> = tree.subtree(i).iter().map(|&j| &tree.order[j]).collect();
        let mut roots: Vec<StorePath> = self
            .roots
            .iter()
            .filter(|(n, _)| names.contains(n))
            .map(|(_, r)| r.clone())
            .collect();
        if !tree.children(i).is_empty() {
            roots.push(self.options.relay.package.clone());
        }
        roots
    }
}

/// A fed node's place in the tree: what it is to receive, from whom.
struct Place<'a> {
    /// The roots it receives ([`FanOut::roots_of`]).
    roots: Vec<StorePath>,
    /// Their closure.
    needed: BTreeSet<StorePath>,
    /// What it had of the union before.
    present: &'a BTreeSet<StorePath>,
    /// How many of `needed` it had.
    needed_present: usize,
    /// The NAR bytes of `needed` it lacks.
    missing_bytes: u64,
    /// The node feeding it.
    parent: String,
    /// Whether it feeds others (and so gets the relay first).
    feeds_others: bool,
}

impl<'a> Place<'a> {
    fn new(
        fanout: &FanOut,
        tree: &Tree,
        i: usize,
        union: &BTreeMap<StorePath, PathInfo>,
        present: &'a BTreeSet<StorePath>,
    ) -> Self {
        let roots = fanout.roots_of(tree, i);
        let needed = closure_within(union, &roots);
        let lacking: Vec<&StorePath> = needed.iter().filter(|p| !present.contains(*p)).collect();
        Place {
            needed_present: needed.len() - lacking.len(),
            missing_bytes: lacking
                .iter()
                .filter_map(|p| union.get(*p))
                .map(|info| info.nar_size)
                .sum(),
            roots,
            needed,
            present,
            parent: tree.order[tree.parent[i].unwrap_or(0)].clone(),
            feeds_others: !tree.children(i).is_empty(),
        }
    }
}

impl Seat {
    /// Copies the node's closure as the fan-out plans it: as the seed from
    /// the deployer, from another node, or directly.
    pub async fn copy<L>(
        &mut self,
        store: &mut NodeStore<SshConnector>,
        own_root: &StorePath,
        mut ctx: SeatCopy<'_, L>,
    ) -> Result<CopyReport, CopyError>
    where
        L: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let fanout = self.fanout.clone();
        let union = {
            let roots: Vec<StorePath> = fanout
                .roots
                .iter()
                .map(|(_, r)| r.clone())
                .chain([fanout.options.relay.package.clone()])
                .collect();
            let local = &mut *ctx.local;
            fanout
                .union
                .get_or_try_init(|| async move { local_closure(local, &roots).await.map(Arc::new) })
                .await?
                .clone()
        };
        let node = store.node().to_owned();
        let present = store
            .client()
            .query_valid_paths(union.keys(), false)
            .await
            .map_err(|source| CopyError::Remote { node, source })?;
        let (feed, feed_rx) = watch::channel(Feed::default());
        self.feed = Some(feed);
        self.joined = true;
        fanout.settle(
            &self.name,
            Some(Member {
                session: ctx.session.clone(),
                present: present.clone(),
                feed: feed_rx,
            }),
        );
        let tree = fanout.tree().await;
        let position = tree
            .as_ref()
            .as_ref()
            .and_then(|t| Some((t, t.position(&self.name)?)));
        let result = match position {
            None => {
                self.direct(store, std::slice::from_ref(own_root), &mut ctx, None)
                    .await
            }
            Some((tree, 0)) => {
                (ctx.source)(Source::Seed);
                self.seed(store, &fanout.roots_of(tree, 0), &mut ctx).await
            }
            Some((tree, i)) => {
                let place = Place::new(&fanout, tree, i, &union, &present);
                self.fed(store, &place, &mut ctx).await
            }
        };
        self.finish(result.is_ok());
        result
    }

    /// Waits until the nodes this one feeds are done with its store (or
    /// gone); at once when it feeds none.
    pub async fn feeding_done(&self) {
        let children: Vec<watch::Receiver<Feed>> = {
            let state = self.fanout.lock();
            let Some(tree) = state.tree.as_ref().and_then(|t| t.as_ref().clone()) else {
                return;
            };
            let Some(i) = tree.position(&self.name) else {
                return;
            };
            tree.children(i)
                .iter()
                .filter_map(|&c| state.members.get(&tree.order[c]))
                .map(|m| m.feed.clone())
                .collect()
        };
        for mut feed in children {
            let _ = feed.wait_for(|f| f.finished.is_some()).await;
        }
    }

    fn publish(&self, f: impl FnOnce(&mut Feed)) {
        if let Some(feed) = &self.feed {
            feed.send_modify(f);
        }
    }

    fn finish(&self, ok: bool) {
        self.publish(|f| f.finished = Some(ok));
    }

    /// A plain copy from the deployer, published for the node's children
    /// batch by batch: batches of [`FOLLOWED_BATCH_BYTES`] at most, so
    /// that the children start (and end) a small batch behind it. Given
    /// `relay` (one of `roots`), it goes first and is started as soon as
    /// it is valid (or at the end, if it came otherwise).
    async fn direct<L>(
        &self,
        store: &mut NodeStore<SshConnector>,
        roots: &[StorePath],
        ctx: &mut SeatCopy<'_, L>,
        relay: Option<&Relay>,
    ) -> Result<CopyReport, CopyError>
    where
        L: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let session = ctx.session;
        let events = ctx.events.clone();
        let forward = async {
            let mut pending = relay;
            while let Some(event) = rx.recv().await {
                if let CopyEvent::PathsDone { paths } = &event {
                    self.publish(|f| f.done.extend(paths.iter().cloned()));
                    if let Some(r) = pending.filter(|r| paths.contains(r.package())) {
                        pending = None;
                        self.start_relay(session, r).await;
                    }
                }
                let _ = events.send(event);
            }
            pending
        };
        let never = CancellationToken::new();
        let mut options = CopyOptions {
            batch_bytes: ctx.options.batch_bytes.or(Some(FOLLOWED_BATCH_BYTES)),
            ..ctx.options.clone()
        };
        options
            .send_first
            .extend(relay.map(|r| r.package().clone()));
        let copy = store.copy_closure(ctx.local, roots, &options, Some(tx), &never);
        let (report, pending) = tokio::join!(copy, forward);
        if let (Ok(_), Some(r)) = (&report, pending) {
            // Already there, or substituted: not among the uploaded paths.
            self.start_relay(session, r).await;
        }
        report
    }

    /// Tells the node's children its relay is ready, if it runs.
    async fn start_relay(&self, session: &SshSession, relay: &Relay) {
        if relay_runs(session, relay).await {
            self.publish(|f| f.relay_ready = true);
        }
    }

    /// The seed (a tree has two nodes at least, so it always feeds): the
    /// relay and everything in one copy, the relay sent first and started
    /// as soon as it is in (one copy's set-up, not two: link probe,
    /// compression, queries, each a few round trips).
    async fn seed<L>(
        &self,
        store: &mut NodeStore<SshConnector>,
        roots: &[StorePath],
        ctx: &mut SeatCopy<'_, L>,
    ) -> Result<CopyReport, CopyError>
    where
        L: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let relay = self.fanout.options.relay.clone();
        let package = relay.package().clone();
        // There from an earlier deploy: started now, not after the copy.
        let valid = store
            .client()
            .query_valid_paths(std::slice::from_ref(&package), false)
            .await
            .is_ok_and(|v| v.contains(&package));
        if valid {
            self.start_relay(ctx.session, &relay).await;
        }
        let all: Vec<StorePath> = std::iter::once(package)
            .chain(roots.iter().cloned())
            .collect();
        self.direct(store, &all, ctx, (!valid).then_some(&relay))
            .await
    }

    /// A node fed by its parent's relay as the parent receives, or directly
    /// when that can't be done.
    async fn fed<L>(
        &self,
        store: &mut NodeStore<SshConnector>,
        place: &Place<'_>,
        ctx: &mut SeatCopy<'_, L>,
    ) -> Result<CopyReport, CopyError>
    where
        L: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let start = Instant::now();
        // Until activation roots them, the paths a relay brings are held
        // by this connection's temp roots, as a direct copy's are.
        let node = store.node().to_owned();
        for root in &place.roots {
            store
                .client()
                .add_temp_root(root)
                .await
                .map_err(|source| CopyError::Remote {
                    node: node.clone(),
                    source,
                })?;
        }
        let (closure_paths, present_paths) = (place.needed.len(), place.needed_present);
        let _ = ctx.events.send(CopyEvent::Planned {
            closure_paths,
            present_paths,
            missing_paths: closure_paths - present_paths,
            missing_bytes: place.missing_bytes,
        });
        let (sent, reason) = match self.relayed(place, ctx).await {
            Ok(sent) => {
                return Ok(CopyReport {
                    closure_paths,
                    present_paths,
                    sent_paths: sent.0,
                    sent_bytes: sent.1,
                    receiver_paths: 0,
                    compressed_bytes: None,
                    elapsed: start.elapsed(),
                })
            }
            Err(e) => e,
        };
        (ctx.source)(Source::Direct { reason });
        let report = self.direct(store, &place.roots, ctx, None).await?;
        Ok(CopyReport {
            sent_paths: report.sent_paths + sent.0,
            sent_bytes: report.sent_bytes + sent.1,
            elapsed: start.elapsed(),
            ..report
        })
    }

    /// Follows the parent's feed through an edge; what it sent, or what it
    /// sent before it had to stop and why.
    async fn relayed<L>(
        &self,
        place: &Place<'_>,
        ctx: &mut SeatCopy<'_, L>,
    ) -> Result<(usize, u64), ((usize, u64), String)>
    where
        L: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let none = (0, 0);
        let parent_name = place.parent.as_str();
        let (parent_session, mut parent_feed) = {
            let state = self.fanout.lock();
            match state.members.get(parent_name) {
                Some(m) => (m.session.clone(), m.feed.clone()),
                None => return Err((none, format!("{parent_name} is not in the deploy"))),
            }
        };
        let ready = parent_feed
            .wait_for(|f| f.relay_ready || f.finished.is_some())
            .await
            .map(|f| f.relay_ready)
            .unwrap_or(false);
        if !ready {
            return Err((none, format!("{parent_name} can't run the relay")));
        }
        let settings = EdgeSettings {
            relay: &self.fanout.options.relay,
            daemon_command: ctx.daemon_command,
            key_lifetime: self.fanout.options.key_lifetime,
            connect_timeout: ctx.connect_timeout,
            fed_address: ctx.peer_address,
            fed_port: ctx.peer_port,
        };
        let mut edge = Edge::open(
            (parent_name, &parent_session),
            (&self.name, ctx.session.clone()),
            &settings,
        )
        .await
        .map_err(|e| (none, e.to_string()))?;
        (ctx.source)(Source::Node(parent_name.to_owned()));
        let result = self.follow(&mut edge, &mut parent_feed, place, ctx).await;
        edge.close().await;
        result
    }

    async fn follow<L>(
        &self,
        edge: &mut Edge,
        parent_feed: &mut watch::Receiver<Feed>,
        place: &Place<'_>,
        ctx: &mut SeatCopy<'_, L>,
    ) -> Result<(usize, u64), ((usize, u64), String)>
    where
        L: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut sent = (0usize, 0u64);
        let events = ctx.events.clone();
        let copy = async |edge: &mut Edge, paths: &[StorePath], sent: &mut (usize, u64)| {
            let (n, bytes) = edge
                .copy(paths, |p| match p {
                    Progress::BytesSent(b) => {
                        let _ = events.send(CopyEvent::BytesSent { bytes: b });
                    }
                    Progress::PathsDone(done) => {
                        let done: Vec<StorePath> = done
                            .iter()
                            .filter_map(|p| StorePath::parse(p).ok())
                            .collect();
                        self.publish(|f| f.done.extend(done.iter().cloned()));
                        let _ = events.send(CopyEvent::PathsDone { paths: done });
                    }
                })
                .await?;
            sent.0 += n;
            sent.1 += bytes;
            Ok::<_, EdgeError>(())
        };
        // A node that feeds others gets the relay first.
        if place.feeds_others {
            let relay = self.fanout.options.relay.clone();
            copy(edge, std::slice::from_ref(relay.package()), &mut sent)
                .await
                .map_err(|e| (sent, e.to_string()))?;
            if relay_runs(ctx.session, &relay).await {
                self.publish(|f| f.relay_ready = true);
            }
        }
        let mut seen = 0;
        loop {
            let (new, finished) = {
                let feed = parent_feed.borrow_and_update();
                let new: Vec<StorePath> = feed.done[seen.min(feed.done.len())..]
                    .iter()
                    .filter(|p| place.needed.contains(*p) && !place.present.contains(*p))
                    .cloned()
                    .collect();
                seen = feed.done.len();
                (new, feed.finished)
            };
            if !new.is_empty() {
                copy(edge, &new, &mut sent)
                    .await
                    .map_err(|e| (sent, e.to_string()))?;
            }
            match finished {
                // Whatever the batches missed (paths the parent had
                // before), then done.
                Some(true) => {
                    copy(edge, &place.roots, &mut sent)
                        .await
                        .map_err(|e| (sent, e.to_string()))?;
                    return Ok(sent);
                }
                Some(false) => return Err((sent, format!("{} failed", place.parent))),
                None => {}
            }
            if parent_feed.changed().await.is_err() {
                return Err((sent, "its feeding node's deploy ended".to_owned()));
            }
        }
    }
}

/// Whether the relay runs on the node of `session` (the right machine, a
/// protocol we speak).
async fn relay_runs(session: &SshSession, relay: &Relay) -> bool {
    let limits = deploy_remote::Limits::DEFAULT.with_timeout(Duration::from_secs(30));
    let command = format!("exec {} --version", quote(&relay.program()));
    match deploy_remote::probe(session, &command, limits).await {
        Ok(out) => out.status.success() && out.stdout.trim() == protocol::version_line(),
        Err(_) => false,
    }
}
