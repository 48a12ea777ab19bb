//! `deploy prepare [all|NODE...]`: what each node has (Nix, its version, a
//! daemon, the SSH user) and, with `--sign`/`--signing-key`, making the
//! node's nix.conf trust the deployer's key. Installing Nix on a node
//! without it is not implemented yet; such a node fails with that message.

use std::process::ExitCode;

use clap::Args;
use deploy_ssh::SshSession;
use nix_deploy::prepare::{prepare, PrepareReport};
use nix_deploy::trust::TrustChange;
use serde_json::json;

use crate::inventory_args::{InventoryArgs, ResolveError};
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
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    inventory: InventoryArgs,
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
    let nodes = args.inventory.resolve(&args.nodes).await?;
    let key = args.signing.load()?.map(|k| k.public_key());
    let ssh = args.inventory.ssh.options();
    let mut failed = 0;
    let mut results = Vec::new();
    for (node, target) in &nodes {
        let result = match SshSession::connect(target, &ssh).await {
            Ok(session) => prepare(&session, key.as_ref())
                .await
                .map_err(|e| e.to_string()),
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
                "daemonSocket": r.facts.daemon_socket,
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

fn describe(r: &PrepareReport) -> String {
    let f = &r.facts;
    let nix = f.nix_version.as_deref().unwrap_or("none");
    let daemon = if f.daemon_socket {
        "a daemon"
    } else {
        "no daemon socket"
    };
    let key = match r.trusted_key {
        Some(TrustChange::Changed) => {
            "; deployer key added to /etc/nix/nix.conf (restart nix-daemon to apply)"
        }
        Some(TrustChange::Unchanged) => "; deployer key already trusted",
        None => "",
    };
    format!("Nix {nix}, {daemon}, logged in as {}{key}", f.user)
}
