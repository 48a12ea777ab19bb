//! How one copy's uploads travel: the [`plan`](super::plan) from the link,
//! then the compressed route it asks for, falling back step by step and
//! saying why: zstd through the node's receiver (pushed first where the
//! node lacks it, checked to run there), else a zlib SSH session, else
//! plain connections.

use std::collections::BTreeSet;
use std::sync::Arc;

use nix_wire::daemon::{DaemonClient, PathInfo};
use nix_wire::StorePath;
use tokio::io::{AsyncRead, AsyncWrite};

use super::events::{CompressionMethod, CopyEvent, Events};
use super::plan::{self, TransferPlan};
use super::schedule::{BatchLimits, Schedule};
use super::upload::{classify, send_batch, Route};
use super::{local_closure, sign, Compression, CopyError, CopyOptions, NodeStore};
use crate::compress::{Decision, Receiver, ZstdControl};
use crate::link::LinkEstimate;
use crate::remote::Connector;

/// The chosen route.
pub(super) struct Chosen<C> {
    pub route: Route<C>,
    pub jobs: usize,
    /// Paths of the receiver's closure pushed besides the copy's own.
    pub receiver_paths: usize,
}

/// Decides and sets up the route of an upload of `missing`; may push the
/// receiver first (taking the paths it shares with `missing` out of it).
pub(super) async fn choose<C, L>(
    store: &mut NodeStore<C>,
    local: &mut DaemonClient<L>,
    link: Option<&LinkEstimate>,
    missing: &mut Vec<PathInfo>,
    options: &CopyOptions,
    events: &Events,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Chosen<C>, CopyError>
where
    C: Connector + 'static,
    L: AsyncRead + AsyncWrite + Unpin + Send,
{
    let compresses_already = store.connector.compresses_already();
    let compression = match compresses_already {
        true => Compression::Never,
        false => options.compression,
    };
    let plan = plan::decide(link, compression, options.jobs);
    if let Some(l) = link {
        events.send(CopyEvent::Link {
            rtt: l.rtt,
            bytes_per_second: l.bytes_per_second,
            window: l.window,
            connections: plan.jobs,
        });
    }
    let plain = Route::plain(store.connector.clone());
    let chosen = |route, receiver_paths| Chosen {
        route,
        jobs: plan.jobs,
        receiver_paths,
    };
    let (zstd_jobs, stripes) = plan.zstd;
    if !plan.compress {
        let (method, reason) = match (compresses_already, options.compression) {
            (true, _) => (
                CompressionMethod::Zlib,
                "the SSH session compresses (Compression in ssh_config)".to_owned(),
            ),
            (false, Compression::Never) => (CompressionMethod::None, "asked not to".to_owned()),
            (false, _) => (CompressionMethod::None, fast_reason(&plan)),
        };
        events.send(CopyEvent::Compression { method, reason });
        return Ok(chosen(plain, 0));
    }
    let machine = link.and_then(|l| l.machine.as_deref());
    let mut receiver_paths = 0;
    let why_not_zstd = match (&options.receiver, machine) {
        (None, _) => "no receiver package (nix-deploy-receive) was given".to_owned(),
        (Some(r), Some(m)) if !r.runs_on(m) => {
            format!("the receiver is built for {}, the node is {m}", r.machine())
        }
        (Some(r), _) => {
            receiver_paths =
                push_receiver(store, local, r, missing, options, events, cancel).await?;
            let control = ZstdControl::for_link(
                plan.per_connection,
                plan.plain_rate,
                zstd_jobs,
                Some(reporter(events)),
            );
            match store.connector.zstd(r, control.clone(), stripes).await {
                Ok(c) => {
                    events.send(CopyEvent::Compression {
                        method: CompressionMethod::Zstd {
                            level: control.level(),
                        },
                        reason: format!(
                            "{}; {zstd_jobs} zstd connections of {stripes} channels",
                            slow_reason(&plan)
                        ),
                    });
                    let route = Route {
                        connector: Arc::new(c),
                        plain: store.connector.clone(),
                        control: Some(control),
                    };
                    return Ok(Chosen {
                        route,
                        jobs: zstd_jobs,
                        receiver_paths,
                    });
                }
                Err(why) => why,
            }
        }
    };
    let route = match store.connector.zlib().await {
        Ok(c) => {
            events.send(CopyEvent::Compression {
                method: CompressionMethod::Zlib,
                reason: format!("{}; no zstd: {why_not_zstd}", slow_reason(&plan)),
            });
            Route {
                connector: Arc::new(c),
                plain: store.connector.clone(),
                control: None,
            }
        }
        Err(why_not_zlib) => {
            events.send(CopyEvent::Compression {
                method: CompressionMethod::None,
                reason: format!("no zstd: {why_not_zstd}; no zlib: {why_not_zlib}"),
            });
            plain
        }
    };
    Ok(chosen(route, receiver_paths))
}

fn mib(bytes_per_second: u64) -> String {
    format!("{:.1} MiB/s", bytes_per_second as f64 / 1048576.0)
}

fn fast_reason(plan: &TransferPlan) -> String {
    match plan.per_channel {
        0 => "the link was not measured".to_owned(),
        r => format!(
            "one channel carries {} (compressing pays below {}); {} connections carry {}",
            mib(r),
            mib(plan::COMPRESS_BELOW),
            plan.jobs,
            mib(plan.plain_rate)
        ),
    }
}

fn slow_reason(plan: &TransferPlan) -> String {
    match plan.per_channel {
        0 => "asked to compress".to_owned(),
        r => format!(
            "one channel carries {} uncompressed, {} connections {}",
            mib(r),
            plan.jobs,
            mib(plan.plain_rate)
        ),
    }
}

/// Reports the zstd control's decisions as events.
fn reporter(events: &Events) -> Arc<dyn Fn(Decision) + Send + Sync> {
    let events = events.clone();
    Arc::new(move |d| {
        events.send(match d {
            Decision::Level(level) => CopyEvent::CompressionLevel { level },
            Decision::Uncompressed => CopyEvent::Compression {
                method: CompressionMethod::None,
                reason: "compressing moved fewer bytes than the plain link carries".to_owned(),
            },
        })
    })
}

/// Makes sure the receiver's closure is in the node's store: the paths it
/// shares with the copy go first (out of `missing`, with progress), then
/// those the node lacks besides (silently). Returns how many of the latter
/// were sent.
async fn push_receiver<C, L>(
    store: &mut NodeStore<C>,
    local: &mut DaemonClient<L>,
    receiver: &Receiver,
    missing: &mut Vec<PathInfo>,
    options: &CopyOptions,
    events: &Events,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<usize, CopyError>
where
    C: Connector + 'static,
    L: AsyncRead + AsyncWrite + Unpin + Send,
{
    let closure = local_closure(local, std::slice::from_ref(receiver.package())).await?;
    store
        .main
        .add_temp_root(receiver.package())
        .await
        .map_err(store.remote_err())?;
    let (shared, rest): (Vec<PathInfo>, Vec<PathInfo>) = std::mem::take(missing)
        .into_iter()
        .partition(|i| closure.contains_key(&i.path));
    *missing = rest;
    let shared_paths: BTreeSet<StorePath> = shared.iter().map(|i| i.path.clone()).collect();
    let others: Vec<StorePath> = closure
        .keys()
        .filter(|p| !shared_paths.contains(p))
        .cloned()
        .collect();
    let present = store
        .main
        .query_valid_paths(&others, false)
        .await
        .map_err(store.remote_err())?;
    let mut own: Vec<PathInfo> = closure
        .into_values()
        .filter(|i| !shared_paths.contains(&i.path) && !present.contains(&i.path))
        .collect();
    sign(&mut own, options).map_err(CopyError::Sign)?;
    let sent = own.len();
    // Over the main connection, already open: the shared paths first (with
    // progress: they are the copy's own), then the receiver's others.
    for (paths, events) in [(shared, events.clone()), (own, Events(None))] {
        if paths.is_empty() {
            continue;
        }
        let ordered = import_order(paths);
        let sent = tokio::select! {
            r = send_batch(&mut store.main, &ordered, &events, !options.check_signatures) => r,
            () = cancel.cancelled() => return Err(CopyError::Cancelled { node: store.node.clone() }),
        };
        sent.map_err(|e| {
            let key = options
                .signing_key
                .as_ref()
                .map(|k| k.public_key().to_string());
            classify(e, &store.node, key.as_ref(), || {
                ordered.first().map(|i| i.path.clone())
            })
        })?;
        events.send(CopyEvent::PathsDone {
            paths: ordered.iter().map(|i| i.path.clone()).collect(),
        });
    }
    Ok(sent)
}

/// `paths` in an order where each comes after its references.
fn import_order(paths: Vec<PathInfo>) -> Vec<PathInfo> {
    let mut schedule = Schedule::new(paths);
    let all = schedule.next_batch(BatchLimits {
        bytes: u64::MAX,
        paths: usize::MAX,
    });
    all.iter().map(|&i| schedule.info(i).clone()).collect()
}
