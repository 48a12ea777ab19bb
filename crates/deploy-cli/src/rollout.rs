//! `deploy [all|NODE...]`: evaluate the flake's inventory, build the
//! selected profiles in one `nix` invocation, then copy and switch every
//! node in parallel (or, with `--diff`, preview what that would change,
//! changing nothing; with `--dry-run`, show the plan without touching nodes).
//!
//! Exit codes: 0 every node succeeded (or nothing to do), 1 bad input or a
//! failure before any node was touched (unknown node, evaluation or build
//! error, `nix` missing), 2 usage error, 3 some nodes failed (or were
//! rolled back) and others succeeded, 4 every node failed.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use deploy_ssh::SshOptions;
use nix_deploy::cache::{BinaryCache, CacheCredentials, CacheError, PushOptions};
use nix_deploy::copy::CopyOptions;
use nix_deploy::deploy::{
    deploy_nodes, diff_cache, diff_nodes, CachePush, DeployOptions, Goal, NodePlan,
};
use nix_deploy::inventory::{build_profiles, InventoryError, NodeConfig, Role};
use tokio_util::sync::CancellationToken;

use crate::cluster_stages::{self, ClusterStageError, ClusterStages};
use crate::fan_out_args::{FanOutArgs, RelayArgError};
use crate::inventory_args::{InventoryArgs, ResolveError};
use crate::nix_source::InventoryNix;
use crate::report::{self, Verbosity};
use crate::signing_args::SigningArgs;
use crate::transfer_args::{ReceiverArgError, TransferArgs};

/// How far to go.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoalArg {
    /// Stop after building the profiles.
    Build,
    /// Stop after copying the closures.
    Push,
    /// Stop after switching the profiles.
    Switch,
    /// Everything, including the cluster stages.
    All,
}

/// Arguments of the deploy itself (the default command).
#[derive(Args, Debug)]
pub struct RolloutArgs {
    /// `all`, or the names of the nodes to deploy.
    #[arg(default_value = "all")]
    nodes: Vec<String>,
    /// Preview, against the live nodes, what a deploy would change; change nothing.
    #[arg(long)]
    diff: bool,
    /// Evaluate and build, then show what would be done per node without touching nodes.
    #[arg(long)]
    dry_run: bool,
    /// Stop after this stage.
    #[arg(long, value_enum, default_value = "all")]
    goal: GoalArg,
    /// Nodes deployed at once.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    /// Daemon connections per node for copying (default: sized from each
    /// node's measured link, 4 to 8, or 2 when compressing).
    #[arg(long)]
    connections: Option<usize>,
    /// Stop every node when one fails.
    #[arg(long)]
    fail_fast: bool,
    /// Do not arm the safe rollback: a failing stage or a lost node leaves
    /// the new generation in place.
    #[arg(long)]
    no_rollback: bool,
    /// Seconds a node waits for the deploy's confirmation before it goes
    /// back to its previous generation by itself, on top of the time the
    /// cluster stages may wait (twice --k3s-timeout with --goal all).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    confirm_timeout: u64,
    /// Seconds to wait for another deploy holding a node's lock.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    lock_timeout: u64,
    /// Seconds one node's deploy may take in all, from connecting to
    /// confirming; past it the node fails (and rolls back, if its watchdog
    /// is armed).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    node_timeout: u64,
    /// Seconds the k3s stage waits for a server's API and for each node to
    /// be Ready.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    k3s_timeout: u64,
    /// Print machine-readable JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Say more: each node's steps (-v), then the libraries' debug logs (-vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Say less: no progress and no summary table, only failures.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Command that runs the Nix daemon on the nodes, speaking on stdio.
    #[arg(long, default_value = deploy_ssh::DEFAULT_DAEMON_COMMAND, value_name = "COMMAND")]
    remote_program: String,
    /// Don't push to the inventory's binary cache (`cluster.cache`):
    /// copy to the nodes as if there were none.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    transfer: TransferArgs,
    #[command(flatten)]
    fan_out: FanOutArgs,
    #[command(flatten)]
    inventory: InventoryArgs,
}

/// Why a deploy stopped before touching nodes.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The inventory could not be read or validated, or a `--target` is wrong.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The profiles could not be built.
    #[error(transparent)]
    Build(#[from] InventoryError),
    /// The cluster stages could not be prepared (e.g. the ingress stack
    /// does not render).
    #[error(transparent)]
    Cluster(#[from] ClusterStageError),
    /// The signing key could not be read or created.
    #[error(transparent)]
    Key(#[from] nix_deploy::keys::KeyFileError),
    /// The receiver can't be used.
    #[error(transparent)]
    Receiver(#[from] ReceiverArgError),
    /// The relay can't be used.
    #[error(transparent)]
    Relay(#[from] RelayArgError),
    /// The inventory's binary cache can't be used.
    #[error("deploy.cluster.cache: {0}")]
    Cache(#[from] CacheError),
}

/// NAR uploads to the binary cache at once.
const CACHE_UPLOADS: usize = 4;

impl RolloutArgs {
    fn options(&self) -> DeployOptions {
        DeployOptions {
            goal: match self.goal {
                GoalArg::Build => Goal::Build,
                GoalArg::Push => Goal::Push,
                GoalArg::Switch => Goal::Switch,
                GoalArg::All => Goal::All,
            },
            jobs: self.jobs,
            fail_fast: self.fail_fast,
            copy: CopyOptions {
                jobs: self.connections,
                compression: self.transfer.compression(),
                substitute_on_node: self.transfer.substitute(),
                ..CopyOptions::default()
            },
            ssh: SshOptions {
                compression: self.transfer.ssh_compression(),
                ..self.inventory.ssh.options()
            },
            daemon_command: self.remote_program.clone(),
            rollback: (!self.no_rollback).then(|| {
                let stages = if self.goal == GoalArg::All {
                    2 * self.k3s_timeout
                } else {
                    0
                };
                Duration::from_secs(self.confirm_timeout.max(1) + stages)
            }),
            lock_timeout: std::time::Duration::from_secs(self.lock_timeout),
            node_timeout: std::time::Duration::from_secs(self.node_timeout.max(1)),
            stages: Vec::new(),
            install_nix: None,
            fan_out: None,
            cache: None,
        }
    }
}

/// Runs the deploy, the preview or the dry run.
pub async fn run(args: RolloutArgs) -> Result<ExitCode, RolloutError> {
    let verbosity = Verbosity::new(args.quiet, args.verbose, args.json);
    crate::logging::init(args.verbose);
    let nix = args.inventory.nix();
    let resolved = args.inventory.resolve_cluster(&args.nodes).await?;
    let selected: Vec<_> = resolved.selected().cloned().collect();
    let configs: Vec<&NodeConfig> = selected.iter().map(|(node, _)| node).collect();
    let built = build_profiles(&nix, &configs).await?;
    let mut plans: Vec<NodePlan> = selected
        .iter()
        .map(|(node, target)| NodePlan {
            name: node.name.clone(),
            target: target.clone(),
            profile_path: node.profile_path.clone(),
            peer_address: node.peer_address.clone(),
            peer_port: node.peer_port,
            profile: built
                .get(&node.name)
                .cloned()
                .unwrap_or_else(|| node.profile.clone()),
        })
        .collect();
    // Servers first: with few parallel jobs, agents must not hold every
    // slot while they wait for their server.
    plans.sort_by_key(|p| {
        let role = selected
            .iter()
            .find(|(n, _)| n.name == p.name)
            .map(|(n, _)| n.role);
        role != Some(Role::Server)
    });
    let mut opts = args.options();
    let cluster = if opts.goal == Goal::All {
        let k3s = cluster_stages::k3s_stage(
            &resolved,
            opts.ssh.clone(),
            Duration::from_secs(args.k3s_timeout.max(1)),
        );
        let (ingress, warnings) = cluster_stages::ingress_stage(&resolved)?;
        report::warnings(&warnings, args.json);
        Some(ClusterStages { k3s, ingress })
    } else {
        None
    };
    if args.dry_run || opts.goal == Goal::Build {
        let stages = |name: &str| {
            cluster
                .as_ref()
                .map(|c| c.describe(name))
                .unwrap_or_default()
        };
        report::plans(&plans, &stages, args.json);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(cluster) = &cluster {
        opts.stages = cluster.stages();
    }
    // Nodes without Nix get it before their first transfer.
    opts.install_nix = Some(Arc::new(InventoryNix::new(
        nix.clone(),
        selected.iter().map(|(n, _)| n.clone()),
        None,
    )));
    // Exit codes count the nodes planned, not the answers that came back.
    let total = plans.len();
    let cache = match (&resolved.cluster.cache, args.no_cache) {
        (Some(cache), false) => Some((
            BinaryCache::new(&cache.url, CacheCredentials::from_env())?,
            cache.compression,
        )),
        _ => None,
    };
    if args.diff {
        let lacking = match &cache {
            Some((cache, _)) => Some((cache.url(), diff_cache(cache, &plans).await)),
            None => None,
        };
        let diffs = diff_nodes(plans, &opts).await;
        let failed = total - diffs.iter().filter(|(_, r)| r.is_ok()).count();
        let fan_out = args.fan_out.options()?.is_some();
        report::diffs(&diffs, args.json, fan_out, lacking);
        return Ok(exit_code(failed, total));
    }
    opts.copy.signing_key = args.signing.load()?;
    opts.copy.receiver = args.transfer.receiver()?;
    opts.fan_out = args.fan_out.options()?;
    opts.cache = match cache {
        Some((cache, compression)) => {
            // The nodes trust this key (prepare): what falls back to a
            // direct copy is signed with it too.
            let key = args.signing.load_always()?;
            opts.copy.signing_key = Some(key.clone());
            Some(CachePush {
                cache,
                options: PushOptions {
                    jobs: CACHE_UPLOADS,
                    compression: compression.into(),
                    signing_key: key,
                },
            })
        }
        None => None,
    };
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let progress = tokio::spawn(report::progress(rx, verbosity));
    let outcomes = deploy_nodes(plans, &opts, Some(tx), &cancel).await;
    let _ = progress.await;
    let failed = total - outcomes.iter().filter(|o| o.status.is_success()).count();
    report::outcomes(&outcomes, verbosity);
    Ok(exit_code(failed, total))
}

fn exit_code(failed: usize, total: usize) -> ExitCode {
    match failed {
        0 => ExitCode::SUCCESS,
        f if f == total => ExitCode::from(4),
        _ => ExitCode::from(3),
    }
}
