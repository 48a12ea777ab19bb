//! The entry point for embedding: deploy, or preview, a set of nodes in
//! parallel. Each node gets its own SSH connection, copy and profile
//! switch; a failing node does not stop the others unless asked to.
//!
//! ```no_run
//! # async fn demo(plans: Vec<nix_deploy::deploy::NodePlan>) {
//! use nix_deploy::deploy::{deploy_nodes, DeployOptions};
//! let cancel = tokio_util::sync::CancellationToken::new();
//! for outcome in deploy_nodes(plans, &DeployOptions::default(), None, &cancel).await {
//!     println!("{}: {:?}", outcome.name, outcome.status);
//! }
//! # }
//! ```

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_ssh::{SshOptions, SshSession, DEFAULT_DAEMON_COMMAND};
use futures_util::FutureExt;
use nix_wire::daemon::{self, ClientConfig, DaemonClient, LocalTransport};
use nix_wire::StorePath;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::cache::{self, BinaryCache, PushOptions};
use crate::closure::{closure_infos, ClosureError};
use crate::copy::{CopyError, CopyOptions, NodeStore, Substitute};
use crate::diff::NodeDiff;
use crate::fanout::{FanOut, FanOutOptions, Seat, SeatCopy};
use crate::profile;
use crate::remote::SshConnector;
use crate::stage::Stage;

mod activation;
mod nix_on_node;
mod outcome;

pub use crate::node_plan::NodePlan;
pub use nix_on_node::{NixInstallFuture, NixSource};
pub use outcome::{DeployEvent, NodeError, NodeOutcome, NodeStatus};

/// The default time a node waits for the deploy's confirmation before it
/// rolls back by itself.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// The default time a deploy waits for another one to release a node.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a node following the cache may take per batch with
/// [`Substitute::Always`].
const FOLLOW_WAIT: Duration = Duration::from_secs(3600);

/// The default time one node's deploy may take, from its connection to its
/// confirmation.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How far a deploy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Goal {
    /// Stop after building (nothing happens on nodes).
    Build,
    /// Stop after copying closures.
    Push,
    /// Stop after switching profiles.
    Switch,
    /// Everything, including the cluster stages.
    All,
}

/// How a deploy runs.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// How far to go.
    pub goal: Goal,
    /// Nodes deployed at once (at least 1).
    pub jobs: usize,
    /// Stop the other nodes when one fails.
    pub fail_fast: bool,
    /// The copy engine's settings.
    pub copy: CopyOptions,
    /// The SSH settings.
    pub ssh: SshOptions,
    /// The command running the Nix daemon on nodes.
    pub daemon_command: String,
    /// Safe rollback: how long a node waits for the confirmation, sent
    /// after the switch and the stages over a fresh connection, before it
    /// goes back to its previous generation by itself. `None`: no watchdog,
    /// and a failing stage leaves the new generation in place.
    pub rollback: Option<Duration>,
    /// How long to wait for another deploy holding a node's lock.
    pub lock_timeout: Duration,
    /// How long one node's deploy may take in all; past it the node fails
    /// (its connection closes, its lock goes with it, and its watchdog, if
    /// armed, rolls it back).
    pub node_timeout: Duration,
    /// Run after the switch, in order, before confirmation (goal `All`).
    pub stages: Vec<Arc<dyn Stage>>,
    /// How to install Nix on a node that has none, before the first
    /// transfer (`None`: such a node fails).
    pub install_nix: Option<Arc<dyn NixSource>>,
    /// Feed nodes from each other so that each path crosses the
    /// deployer's uplink once ([`crate::fanout`]); `None`: every node is
    /// copied to directly. Used when at least two nodes are deployed and
    /// all of them at once (`jobs`).
    pub fan_out: Option<FanOutOptions>,
    /// Push the deploy's closures to this binary cache (not with
    /// [`Substitute::Never`]) while the nodes' deploys start: each node
    /// substitutes its paths as they land there (it lists the cache after
    /// `deploy prepare`), and fan-out is not used. A failed push is
    /// reported
    /// ([`DeployEvent::CacheFailed`]) and the nodes get direct copies of
    /// what they still lack.
    pub cache: Option<CachePush>,
}

/// A binary cache to push to before the nodes' copies.
#[derive(Debug, Clone)]
pub struct CachePush {
    /// The cache.
    pub cache: BinaryCache,
    /// How to push.
    pub options: PushOptions,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            goal: Goal::All,
            jobs: 8,
            fail_fast: false,
            copy: CopyOptions::default(),
            ssh: SshOptions::default(),
            daemon_command: DEFAULT_DAEMON_COMMAND.to_owned(),
            rollback: Some(DEFAULT_CONFIRM_TIMEOUT),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            stages: Vec::new(),
            install_nix: None,
            fan_out: None,
            cache: None,
        }
    }
}

async fn local_store() -> Result<DaemonClient<LocalTransport>, daemon::Error> {
    DaemonClient::connect(daemon::connect_local().await?, ClientConfig::default()).await
}

async fn open_node(
    plan: &NodePlan,
    opts: &DeployOptions,
    install: Option<&(dyn Fn(DeployEvent) + Send + Sync)>,
) -> Result<(Arc<SshSession>, NodeStore<SshConnector>), NodeError> {
    let session = Arc::new(SshSession::connect(&plan.target, &opts.ssh).await?);
    let open = || {
        NodeStore::open(
            SshConnector::new(session.clone(), opts.daemon_command.clone())
                .with_zlib_fallback(plan.target.clone(), opts.ssh.clone()),
        )
    };
    let store = match open().await {
        Ok(store) => store,
        Err(e) => match install {
            Some(send) => {
                nix_on_node::install_if_missing(plan, opts, &session, e.into(), send).await?;
                open().await?
            }
            None => return Err(e.into()),
        },
    };
    Ok((session, store))
}

/// Deploys every plan, `opts.jobs` nodes at a time, and returns one outcome
/// per node in the order given.
pub async fn deploy_nodes(
    plans: Vec<NodePlan>,
    opts: &DeployOptions,
    events: Option<UnboundedSender<DeployEvent>>,
    cancel: &CancellationToken,
) -> Vec<NodeOutcome> {
    let limit = Arc::new(Semaphore::new(opts.jobs.max(1)));
    // With a cache, the nodes substitute from it as it fills (fan-out is
    // not used); unless they don't substitute at all.
    let push = match &opts.cache {
        Some(push)
            if opts.goal >= Goal::Push && opts.copy.substitute_on_node != Substitute::Never =>
        {
            Some(push)
        }
        _ => None,
    };
    let roots: Vec<StorePath> = plans.iter().map(|p| p.profile.clone()).collect();
    let (feed, fed) = watch::channel(CacheFeed::default());
    let fanout = match &opts.fan_out {
        Some(f)
            if push.is_none()
                && opts.goal >= Goal::Push
                && plans.len() >= 2
                && plans.len() <= opts.jobs =>
        {
            let roots = plans
                .iter()
                .map(|p| (p.name.clone(), p.profile.clone()))
                .collect();
            Some(FanOut::new(roots, f.clone()))
        }
        _ => None,
    };
    let tasks = plans.into_iter().map(|plan| {
        let (limit, opts, events, cancel) =
            (limit.clone(), opts.clone(), events.clone(), cancel.clone());
        let name = plan.name.clone();
        let seat = fanout.as_ref().map(|f| f.seat(&plan.name));
        let follow = push.map(|_| fed.clone());
        let handle = tokio::spawn(async move {
            let start = Instant::now();
            let _permit = limit.acquire_owned().await;
            let mut sent = (0, 0);
            // A panic (a bug, say in a third-party stage) is this node's
            // failure, told to the stages like any other.
            let run = AssertUnwindSafe(deploy_one(
                &plan,
                &opts,
                events.as_ref(),
                (seat, follow),
                &mut sent,
            ));
            let result = tokio::select! {
                r = tokio::time::timeout(opts.node_timeout, run.catch_unwind()) => match r {
                    Ok(Ok(r)) => r,
                    Ok(Err(p)) => Err(NodeError::panicked(&plan.name, p)),
                    Err(_) => Err(NodeError::TimedOut {
                        node: plan.name.clone(),
                        seconds: opts.node_timeout.as_secs(),
                    }),
                },
                () = cancel.cancelled() => Err(NodeError::Cancelled),
            };
            let status = result.unwrap_or_else(NodeStatus::Failed);
            for stage in &opts.stages {
                stage.node_finished(&plan.name, status.is_success());
            }
            if !status.is_success() && opts.fail_fast {
                cancel.cancel();
            }
            NodeOutcome {
                name: plan.name,
                status,
                sent_paths: sent.0,
                sent_bytes: sent.1,
                elapsed: start.elapsed(),
            }
        });
        (name, handle)
    });
    let handles: Vec<_> = tasks.collect();
    let pushing = async {
        if let Some(push) = push {
            push_to_cache(push, &roots, events.as_ref(), cancel, &feed).await;
        }
        feed.send_modify(|f| f.done = true);
    };
    let ((), outcomes) = tokio::join!(pushing, collect(handles, opts, cancel));
    outcomes
}

/// Each node's outcome, in the order of `handles`.
async fn collect(
    handles: Vec<(String, tokio::task::JoinHandle<NodeOutcome>)>,
    opts: &DeployOptions,
    cancel: &CancellationToken,
) -> Vec<NodeOutcome> {
    let start = Instant::now();
    let mut outcomes = Vec::with_capacity(handles.len());
    for (name, handle) in handles {
        let outcome = match handle.await {
            Ok(o) => o,
            // Only a panic outside the deploy itself (in a stage's
            // `node_finished`) gets here.
            Err(e) => {
                if opts.fail_fast {
                    cancel.cancel();
                }
                NodeOutcome {
                    status: NodeStatus::Failed(NodeError::from_join(&name, e)),
                    name,
                    sent_paths: 0,
                    sent_bytes: 0,
                    elapsed: start.elapsed(),
                }
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// What `cache` lacks of the plans' closures: what a deploy would push to
/// it (the preview beside [`diff_nodes`]). Changes nothing.
pub async fn diff_cache(
    cache: &BinaryCache,
    plans: &[NodePlan],
) -> Result<cache::Lacking, cache::CacheError> {
    let roots: Vec<StorePath> = plans.iter().map(|p| p.profile.clone()).collect();
    let mut local = local_store().await.map_err(cache::CacheError::Local)?;
    cache::lacks(cache, &mut local, &roots).await
}

/// What the binary cache has received so far in this deploy, for the
/// nodes that follow it.
#[derive(Debug, Default)]
struct CacheFeed {
    /// Paths whose narinfos are there, in the order they came.
    available: Vec<StorePath>,
    /// The push ended (done or failed).
    done: bool,
}

/// Pushes the closures of `roots` to the cache, telling `events` how it
/// goes and `feed` what is available.
async fn push_to_cache(
    push: &CachePush,
    roots: &[StorePath],
    events: Option<&UnboundedSender<DeployEvent>>,
    cancel: &CancellationToken,
    feed: &watch::Sender<CacheFeed>,
) {
    let send = |e: DeployEvent| {
        if let Some(tx) = events {
            let _ = tx.send(e);
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let forward = async {
        while let Some(event) = rx.recv().await {
            if let cache::CacheEvent::Available { paths } = &event {
                feed.send_modify(|f| f.available.extend(paths.iter().cloned()));
            }
            send(DeployEvent::Cache { event });
        }
    };
    let run = async {
        let mut local = local_store().await.map_err(cache::CacheError::Local)?;
        cache::push(
            &push.cache,
            &mut local,
            roots,
            &push.options,
            Some(tx),
            cancel,
        )
        .await
    };
    let (result, ()) = tokio::join!(run, forward);
    match result {
        Ok(report) => send(DeployEvent::CachePushed { report }),
        // The deploy is cancelled as a whole: nothing to report here.
        Err(cache::CacheError::Cancelled) => {}
        Err(e) => send(DeployEvent::CacheFailed {
            cache: push.cache.url().to_owned(),
            error: e.to_string(),
        }),
    }
}

/// Has the node substitute its closure's paths as the binary cache
/// receives them, until the push ends or the node fetches none of a batch
/// it lacks (it does not read that cache, or can't reach it); the copy
/// after it finds them valid.
async fn follow_cache(
    store: &mut NodeStore<SshConnector>,
    local: &mut DaemonClient<LocalTransport>,
    profile: &StorePath,
    mut feed: watch::Receiver<CacheFeed>,
    ask_within: Duration,
    events: UnboundedSender<crate::copy::CopyEvent>,
) {
    let Ok(closure) = closure_infos(local, std::slice::from_ref(profile)).await else {
        return;
    };
    let mut seen = 0;
    loop {
        let (batch, done) = {
            let f = feed.borrow_and_update();
            let batch: Vec<StorePath> = f.available[seen..]
                .iter()
                .filter(|p| closure.contains_key(*p))
                .cloned()
                .collect();
            seen = f.available.len();
            (batch, f.done)
        };
        let lacking = match batch.is_empty() {
            true => Vec::new(),
            false => match store.client().query_valid_paths(&batch, false).await {
                Ok(valid) => batch.into_iter().filter(|p| !valid.contains(p)).collect(),
                Err(_) => return,
            },
        };
        if !lacking.is_empty()
            && store
                .substitute_now(&lacking, ask_within, Some(events.clone()))
                .await
                .is_empty()
        {
            return;
        }
        if done || feed.changed().await.is_err() {
            return;
        }
    }
}

async fn deploy_one(
    plan: &NodePlan,
    opts: &DeployOptions,
    events: Option<&UnboundedSender<DeployEvent>>,
    (mut seat, follow): (Option<Seat>, Option<watch::Receiver<CacheFeed>>),
    sent: &mut (usize, u64),
) -> Result<NodeStatus, NodeError> {
    let send = &|e: DeployEvent| {
        if let Some(tx) = events {
            let _ = tx.send(e);
        }
    };
    send(DeployEvent::NodeStarted {
        name: plan.name.clone(),
    });
    if opts.goal < Goal::Push {
        return Ok(NodeStatus::Done);
    }
    // The node's connection and the local store's (maybe a spawned
    // `nix-daemon --stdio`) come up at the same time.
    let (node, local) = tokio::join!(open_node(plan, opts, Some(send)), local_store());
    let (session, mut store) = node?;
    let mut local = local?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let forward = async {
        while let Some(event) = rx.recv().await {
            send(DeployEvent::Copy {
                name: plan.name.clone(),
                event,
            });
        }
    };
    let source = |source| {
        send(DeployEvent::Source {
            name: plan.name.clone(),
            source,
        })
    };
    let copy = async {
        let r = match seat.as_mut() {
            Some(seat) => {
                let ctx = SeatCopy {
                    session: &session,
                    local: &mut local,
                    options: &opts.copy,
                    daemon_command: &opts.daemon_command,
                    connect_timeout: opts.ssh.connect_timeout,
                    events: tx,
                    source: &source,
                    peer_address: plan.peer_address.as_deref(),
                    peer_port: plan.peer_port,
                };
                seat.copy(&mut store, &plan.profile, ctx).await?
            }
            None => {
                if let Some(feed) = follow {
                    let ask_within = match opts.copy.substitute_on_node {
                        Substitute::Auto { ask_within } => ask_within,
                        _ => FOLLOW_WAIT,
                    };
                    let profile = &plan.profile;
                    follow_cache(
                        &mut store,
                        &mut local,
                        profile,
                        feed,
                        ask_within,
                        tx.clone(),
                    )
                    .await;
                }
                let never = CancellationToken::new();
                store
                    .copy_closure(
                        &mut local,
                        std::slice::from_ref(&plan.profile),
                        &opts.copy,
                        Some(tx),
                        &never,
                    )
                    .await?
            }
        };
        Ok::<_, NodeError>(r)
    };
    let (report, ()) = tokio::join!(copy, forward);
    let report = report?;
    *sent = (report.sent_paths, report.sent_bytes);
    let status = if opts.goal >= Goal::Switch {
        activation::activate(plan, opts, &session, send).await?
    } else {
        NodeStatus::Done
    };
    // The nodes it feeds read from its store: its temp roots stay until
    // they are done.
    if let Some(seat) = &seat {
        seat.feeding_done().await;
    }
    drop(store);
    Ok(status)
}

/// Previews every plan against its live node, changing nothing; one result
/// per node in the order given.
pub async fn diff_nodes(
    plans: Vec<NodePlan>,
    opts: &DeployOptions,
) -> Vec<(String, Result<NodeDiff, NodeError>)> {
    let limit = Arc::new(Semaphore::new(opts.jobs.max(1)));
    let handles: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            let (limit, opts) = (limit.clone(), opts.clone());
            let name = plan.name.clone();
            let handle = tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                diff_one(&plan, &opts).await
            });
            (name, handle)
        })
        .collect();
    let mut out = Vec::new();
    for (name, handle) in handles {
        let r = match handle.await {
            Ok(r) => r,
            Err(e) => Err(NodeError::from_join(&name, e)),
        };
        out.push((name, r));
    }
    out
}

async fn diff_one(plan: &NodePlan, opts: &DeployOptions) -> Result<NodeDiff, NodeError> {
    // A preview installs nothing.
    let (session, mut store) = open_node(plan, opts, None).await?;
    let node = store.node().to_owned();
    let old_profile = profile::current(&session, &plan.profile_path).await?;
    let old = match &old_profile {
        Some(p) => closure_infos(store.client(), std::slice::from_ref(p))
            .await
            .map_err(|source| NodeError::Closure {
                node: node.clone(),
                source,
            })?,
        None => Default::default(),
    };
    let mut local = local_store().await?;
    let new = closure_infos(&mut local, std::slice::from_ref(&plan.profile))
        .await
        .map_err(|e| match e {
            ClosureError::NotValid(path) => NodeError::Copy(CopyError::NotInLocalStore { path }),
            ClosureError::Daemon(e) => NodeError::Local(e),
        })?;
    let valid = store
        .client()
        .query_valid_paths(new.keys(), false)
        .await
        .map_err(|source| NodeError::Copy(CopyError::Remote { node, source }))?;
    let missing: Vec<StorePath> = new
        .keys()
        .filter(|p| !valid.contains(*p))
        .cloned()
        .collect();
    Ok(NodeDiff::compute(
        old_profile,
        &old,
        plan.profile.clone(),
        &new,
        &missing,
    ))
}
