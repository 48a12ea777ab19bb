//! `deploy prepare [all|NODE...]`: what each node has (Nix, its version, a
//! daemon, the SSH user), installing Nix on a node without it (the node's
//! `nix.install` method, or `--nix-install`; the `closure` method builds
//! the inventory's `nix.package` first, once) and, with
//! `--sign`/`--signing-key` or a `cluster.cache`, making the node's
//! nix.conf trust the deployer's key (and the cache's substituter, with
//! the node's other settings).

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use deploy_ssh::SshSession;
use nix_deploy::apt_install::AptChange;
use nix_deploy::install::{DaemonService, InstallMethod, Installed};
use nix_deploy::inventory::NodeConfig;
use nix_deploy::prepare::{inspect, prepare, PrepareReport};
use nix_deploy::trust::TrustChange;
use serde_json::json;

use crate::inventory_args::{InventoryArgs, ResolveError};
use crate::nix_source::InventoryNix;
use crate::signing_args::SigningArgs;

/// Arguments of `deploy prepare`.
#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// `all`, or the names of the nodes to prepare.
    #[arg(default_value = "all")]
    nodes: Vec<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    /// How to install Nix on a node without it, instead of the node's
    /// `nix.install` in the inventory.
    #[arg(long, value_name = "METHOD")]
    nix_install: Option<Method>,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    inventory: InventoryArgs,
}

/// `--nix-install` values.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum Method {
    /// Push the inventory's Nix package from this machine's store.
    Closure,
    /// Debian's nix-bin, with the node's apt.
    Apt,
}

/// Why `deploy prepare` stopped before any node.
#[derive(Debug, thiserror::Error)]
pub enum PrepareCmdError {
    /// The nodes could not be found in the inventory.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The signing key could not be read or created.
    #[error(transparent)]
    Key(#[from] nix_deploy::keys::KeyFileError),
}

/// Prepares each node in turn; one line (or JSON object) per node.
pub async fn run(args: PrepareArgs) -> Result<ExitCode, PrepareCmdError> {
    let resolved = args.inventory.resolve_cluster(&args.nodes).await?;
    let nodes: Vec<_> = resolved.selected().cloned().collect();
    // Nodes verify what the deployer signed in the binary cache.
    let key = match resolved.cluster.cache {
        Some(_) => Some(args.signing.load_always()?),
        None => args.signing.load()?,
    }
    .map(|k| k.public_key());
    let ssh = args.inventory.ssh.options();
    let source = InventoryNix::new(
        args.inventory.nix(),
        nodes.iter().map(|(n, _)| n.clone()),
        args.nix_install.map(Into::into),
    );
    let mut failed = 0;
    let mut results = Vec::new();
    for (node, target) in &nodes {
        let result = match SshSession::connect(target, &ssh).await {
            Ok(session) => prepare_node(&session, node, key.as_ref(), &source).await,
            Err(e) => Err(e.to_string()),
        };
        failed += usize::from(result.is_err());
        if !args.json {
            match &result {
                Ok(r) => println!("{}: {}", node.name, describe(r)),
                Err(e) => eprintln!("{}: {e}", node.name),
            }
        }
        results.push(match result {
            Ok(r) => json!({"name": node.name, "user": r.facts.user, "nixVersion": r.facts.nix_version,
                "daemonSocket": r.facts.daemon_socket, "trusted": r.facts.trusted,
                "settingsChanged": r.settings == Some(TrustChange::Changed),
                "daemonRestarted": r.daemon_restarted,
                "installed": r.installed.as_ref().map(install_json),
                "changed": r.changed(),
                "keyTrusted": r.trusted_key.map(|c| if c == TrustChange::Changed { "added" } else { "already" })}),
            Err(e) => json!({"name": node.name, "error": e}),
        });
    }
    if args.json {
        println!("{}", json!({ "nodes": results }));
    }
    Ok(match failed {
        0 => ExitCode::SUCCESS,
        f if f == nodes.len() => ExitCode::from(4),
        _ => ExitCode::from(3),
    })
}

/// Prepares one node: if it has no Nix, installs it as `source` says.
async fn prepare_node(
    session: &SshSession,
    node: &NodeConfig,
    key: Option<&nix_wire::signing::PublicKey>,
    source: &InventoryNix,
) -> Result<PrepareReport, String> {
    let facts = inspect(session).await.map_err(|e| e.to_string())?;
    let how = match facts.nix_version {
        Some(_) => None,
        None => Some(source.for_node(node).await.map_err(|e| e.to_string())?),
    };
    prepare(session, key, how.as_ref(), &node.nix.settings)
        .await
        .map_err(|e| e.to_string())
}

impl From<Method> for InstallMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::Closure => InstallMethod::Closure,
            Method::Apt => InstallMethod::Apt,
        }
    }
}

fn install_json(installed: &Installed) -> serde_json::Value {
    match installed {
        Installed::Closure(r) => json!({"method": "closure", "package": r.package.to_string(),
            "closurePaths": r.closure_paths,
            "sentPaths": r.sent_paths, "sentBytes": r.sent_bytes,
            "registeredPaths": r.registered_paths, "buildUsersCreated": r.build_users_created,
            "nixConfChanged": r.nix_conf == TrustChange::Changed, "profileCreated": r.profile_created,
            "linkedCommands": r.linked_commands, "service": format!("{:?}", r.service),
            "seconds": r.elapsed.as_secs_f64()}),
        Installed::Apt(r) => json!({"method": "apt", "nixVersion": r.nix_version,
            "packages": match &r.change { AptChange::Installed(p) => p.clone(), AptChange::AlreadyInstalled => Vec::new() },
            "systemd": r.systemd, "daemonSocket": r.daemon_socket}),
    }
}

fn describe(r: &PrepareReport) -> String {
    let f = &r.facts;
    let nix = f.nix_version.as_deref().unwrap_or("none");
    let daemon = if f.daemon_socket {
        "a daemon"
    } else {
        "no daemon socket"
    };
    let key = match (r.trusted_key, r.daemon_restarted) {
        (Some(TrustChange::Changed), true) => "; deployer key added to /etc/nix/nix.conf",
        (Some(TrustChange::Changed), false) => {
            "; deployer key added to /etc/nix/nix.conf (restart nix-daemon to apply)"
        }
        (Some(TrustChange::Unchanged), _) => "; deployer key already trusted",
        (None, _) => "",
    };
    let installed = match &r.installed {
        Some(Installed::Apt(a)) => match &a.change {
            AptChange::Installed(p) => format!(" (installed now with apt: {})", p.join(" ")),
            AptChange::AlreadyInstalled => " (from apt)".to_owned(),
        },
        Some(Installed::Closure(i)) => format!(
            " (installed now: {} of {} paths, {:.1} MiB, in {:.1} s; {})",
            i.sent_paths,
            i.closure_paths,
            i.sent_bytes as f64 / (1024.0 * 1024.0),
            i.elapsed.as_secs_f64(),
            match i.service {
                DaemonService::NoSystemd => "no systemd: no nix-daemon service",
                DaemonService::Running => "nix-daemon running",
                DaemonService::Started => "nix-daemon started",
                DaemonService::Installed => "nix-daemon.service installed and started",
            }
        ),
        None => String::new(),
    };
    let trusted = match f.trusted {
        Some(true) => " (trusted)",
        Some(false) => " (not trusted: pushes must be signed, see --sign)",
        None => "",
    };
    let settings = match r.settings {
        Some(TrustChange::Changed) => "; nix.conf settings updated",
        _ => "",
    };
    let restarted = if r.daemon_restarted {
        "; nix-daemon restarted"
    } else {
        ""
    };
    format!(
        "Nix {nix}{installed}, {daemon}, logged in as {}{trusted}{settings}{key}{restarted}",
        f.user
    )
}
