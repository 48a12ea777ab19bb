//! `deploy generations NODE` and `deploy rollback NODE [--to N]`: a node's
//! profile generations, and switching it back, found through the flake's
//! inventory like `deploy` finds nodes. Rollback takes the node's lock.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use deploy_ssh::{SshError, SshSession, Target};
use nix_deploy::activate::generations::{self, Generation};
use nix_deploy::activate::{lock, ActivationError};
use nix_deploy::inventory::NodeConfig;
use serde_json::json;

use crate::inventory_args::{InventoryArgs, ResolveError};

/// `deploy generations NODE`.
#[derive(Args, Debug)]
pub struct GenerationsArgs {
    /// The node, by its inventory name.
    node: String,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    inventory: InventoryArgs,
}

/// `deploy rollback NODE [--to N]`.
#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The node, by its inventory name.
    node: String,
    /// The generation to go back to (default: the one before the current one).
    #[arg(long, value_name = "N")]
    to: Option<u64>,
    /// Seconds to wait for a deploy holding the node's lock.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    lock_timeout: u64,
    #[command(flatten)]
    inventory: InventoryArgs,
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerationsError {
    /// The node could not be found in the inventory.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The command works on one node.
    #[error("{0:?} does not name exactly one node: name one node of the inventory")]
    OneNode(String),
    /// Connecting failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// Listing or switching failed.
    #[error(transparent)]
    Activation(#[from] ActivationError),
}

async fn connect(
    inventory: &InventoryArgs,
    name: &str,
) -> Result<(NodeConfig, Target, SshSession), GenerationsError> {
    let nodes = inventory.resolve(&[name.to_owned()]).await?;
    let [(node, target)]: [(NodeConfig, Target); 1] = nodes
        .try_into()
        .map_err(|_| GenerationsError::OneNode(name.to_owned()))?;
    let session = SshSession::connect(&target, &inventory.ssh.options()).await?;
    Ok((node, target, session))
}

/// Lists the generations.
pub async fn list(args: GenerationsArgs) -> Result<ExitCode, GenerationsError> {
    let (node, _, session) = connect(&args.inventory, &args.node).await?;
    let gens = generations::list(&session, &node.profile_path).await?;
    if args.json {
        let list: Vec<_> = gens
            .iter()
            .map(|g| json!({"number": g.number, "created": g.created, "path": g.path, "current": g.current}))
            .collect();
        println!(
            "{}",
            json!({"node": node.name, "profilePath": node.profile_path, "generations": list})
        );
        return Ok(ExitCode::SUCCESS);
    }
    if gens.is_empty() {
        println!("{}: no generations of {}", node.name, node.profile_path);
    }
    for g in &gens {
        println!("{}", line(g));
    }
    Ok(ExitCode::SUCCESS)
}

/// Rolls back, under the node's lock.
pub async fn rollback(args: RollbackArgs) -> Result<ExitCode, GenerationsError> {
    let (node, _, session) = connect(&args.inventory, &args.node).await?;
    let held = lock::acquire(&session, Duration::from_secs(args.lock_timeout), |holder| {
        eprintln!(
            "{}: waiting for another deploy to finish ({holder})",
            node.name
        )
    })
    .await?;
    let result = generations::rollback(&session, &node.profile_path, args.to).await;
    held.release().await;
    let g = result?;
    println!("{}: now on generation {} ({})", node.name, g.number, g.path);
    Ok(ExitCode::SUCCESS)
}

/// One row: number, date (UTC), store path, current marker.
fn line(g: &Generation) -> String {
    format!(
        "{:>5}  {}  {}{}",
        g.number,
        utc(g.created),
        g.path,
        if g.current { "  (current)" } else { "" }
    )
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of seconds since the epoch.
fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_in_utc() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_795_699_385), "2026-11-26 13:23:05");
    }
}
