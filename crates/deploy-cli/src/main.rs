//! `deploy`: the command-line front of the deployer. It parses arguments,
//! runs library calls and renders their results; the work itself lives in
//! the libraries (`nix-deploy`, `deploy-cluster`, whose k3s and ingress
//! stages it registers, `nix-wire`, `deploy-ssh`). No library depends on it.
//!
//! Exit codes: 0 success, 1 failure (the message says what failed and what
//! to do), 2 usage error; a deploy of several nodes also uses 3 (some nodes
//! failed) and 4 (every node failed).

mod cluster_stages;
mod copy;
mod fan_out_args;
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

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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

/// Moves the options given before a subcommand behind it, so that global
/// options work in either place: `deploy --flake F rollback NODE --to 3`
/// is `deploy rollback --flake F NODE --to 3`. Without a subcommand (the
/// deploy itself), or with a word that is no option first (a node name),
/// `argv` stays as it is. Options the subcommand doesn't take are then
/// refused by it, naming them.
fn subcommand_first(mut argv: Vec<OsString>) -> Vec<OsString> {
    let mut cli = Cli::command();
    cli.build();
    // How many separate values an option given as `word` takes.
    let values = |word: &str| -> usize {
        let arg = match word.strip_prefix("--") {
            Some(long) if !long.contains('=') => {
                cli.get_arguments().find(|a| a.get_long() == Some(long))
            }
            Some(_) => None,
            None => {
                let mut chars = word.chars().skip(1);
                match (chars.next(), chars.next()) {
                    (Some(short), None) => {
                        cli.get_arguments().find(|a| a.get_short() == Some(short))
                    }
                    _ => None,
                }
            }
        };
        arg.filter(|a| a.get_action().takes_values())
            .map_or(0, |a| a.get_num_args().map_or(1, |n| n.max_values()))
    };
    let mut i = 1;
    while let Some(word) = argv.get(i).and_then(|w| w.to_str()) {
        if cli.find_subcommand(word).is_some() {
            if i > 1 {
                argv[1..=i].rotate_right(1);
            }
            break;
        }
        if word == "--" || !word.starts_with('-') || word == "-" {
            break;
        }
        i += 1 + values(word);
    }
    argv
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse_from(subcommand_first(std::env::args_os().collect()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &str) -> Vec<OsString> {
        words.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn options_before_a_subcommand_move_behind_it() {
        let moved = subcommand_first(args("deploy --flake F -i K --option a b rollback n --to 3"));
        assert_eq!(
            moved,
            args("deploy rollback --flake F -i K --option a b n --to 3")
        );
        let cli = Cli::try_parse_from(moved).unwrap();
        assert!(matches!(cli.command, Some(Command::Rollback(_))));
    }

    #[test]
    fn a_deploy_without_subcommand_stays_as_it_is() {
        for words in [
            "deploy --flake F all",
            "deploy --diff k8s-cluster-main",
            "deploy --flake rollback all",
            "deploy",
        ] {
            assert_eq!(subcommand_first(args(words)), args(words));
        }
        // A node named like a subcommand comes after the other nodes' names.
        let words = "deploy --flake F main rollback";
        assert_eq!(subcommand_first(args(words)), args(words));
    }
}
