//! `deploy`: the command-line front of the deployer. It parses arguments,
//! runs library calls and renders their results; the work itself lives in
//! the libraries (`nix-wire` for now).
//!
//! Exit codes: 0 success, 1 failure (the message says what failed and what
//! to do), 2 usage error; a deploy of several nodes also uses 3 (some nodes
//! failed) and 4 (every node failed).

mod cluster_stages;
mod copy;
mod generations;
mod inventory_args;
mod logging;
mod nix_source;
mod path_info_json;
mod prepare_cmd;
mod progress;
mod report;
mod rollout;
mod signing_args;
mod ssh_args;
mod store;
mod transfer_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Nix-native deployer for small k3s clusters on plain Debian VPS nodes.
///
/// Without a subcommand, deploys the flake's nodes: `deploy all`,
/// `deploy NODE...`, `deploy --diff`. Exit codes: 0 success, 1 failure
/// before any node was touched (bad input, evaluation or build error), 2
/// usage error, 3 some nodes failed or were rolled back, 4 every node failed.
#[derive(Parser)]
#[command(
    name = "deploy",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    rollout: rollout::RolloutArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Plumbing on the local Nix store, through our own NAR and daemon code.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Copy the closures of store paths to a node over SSH, with our own
    /// NAR streaming and daemon protocol (no `nix copy`, no `ssh` binary).
    Copy(copy::CopyArgs),
    /// Print the deployer's signing key's public half (generating the key
    /// on first use), to list in nodes' `trusted-public-keys`.
    PublicKey(signing_args::PublicKeyArgs),
    /// Inspect nodes (Nix, daemon, SSH user) and, with --sign, make them
    /// trust the deployer's signing key.
    Prepare(prepare_cmd::PrepareArgs),
    /// List a node's profile generations (number, date, store path, current).
    Generations(generations::GenerationsArgs),
    /// Switch a node's profile back to the previous generation, or `--to N`.
    Rollback(generations::RollbackArgs),
}

/// glibc gives each thread that allocates a malloc arena of its own (up to
/// eight per core), and each keeps the NAR chunks freed in it: with the
/// copy engine's encoder threads that doubles the peak memory for nothing.
/// Two arenas keep it flat.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deploy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Store(cmd)) => store::run(cmd).await.map_err(|e| e.to_string()),
            Some(Command::Copy(args)) => copy::run(args).await.map_err(|e| e.to_string()),
            Some(Command::PublicKey(args)) => {
                signing_args::public_key(args).map_err(|e| e.to_string())
            }
            Some(Command::Prepare(args)) => prepare_cmd::run(args).await.map_err(|e| e.to_string()),
            Some(Command::Generations(args)) => {
                generations::list(args).await.map_err(|e| e.to_string())
            }
            Some(Command::Rollback(args)) => {
                generations::rollback(args).await.map_err(|e| e.to_string())
            }
            None => rollout::run(cli.rollout).await.map_err(|e| e.to_string()),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("deploy: {e}");
            ExitCode::FAILURE
        }
    }
}
