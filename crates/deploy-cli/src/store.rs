//! `deploy store …`: plumbing on the local store, useful on its own and for
//! testing the wire crate against Nix's own tools.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use nix_wire::daemon::{self, ClientConfig, DaemonClient, PathInfo};
use nix_wire::{nar, StorePath};

use crate::path_info_json::PathInfoJson;

/// The `store` subcommands.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Write the NAR serialisation of PATH (a store path or any file or
    /// directory) to stdout, byte for byte what `nix-store --dump` writes.
    Dump {
        /// What to serialise.
        path: PathBuf,
    },
    /// Print path infos from the local store, asked through the daemon
    /// protocol. Exits 1 if a path is not valid.
    Info {
        /// Include every path in the closures of the given paths.
        #[arg(short, long)]
        recursive: bool,
        /// Print the JSON of `nix path-info --json` instead of one
        /// `PATH<TAB>NAR-SIZE<TAB>NAR-HASH` line per path.
        #[arg(long)]
        json: bool,
        /// Store paths, files inside them, or symlinks to them (`./result`).
        #[arg(required = true)]
        paths: Vec<String>,
    },
}

/// What can go wrong in a `store` command.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Stdout is a terminal; a NAR is binary.
    #[error("refusing to write a binary NAR to a terminal: redirect stdout to a file or a pipe")]
    Terminal,
    /// Serialising failed.
    #[error(transparent)]
    Nar(#[from] nar::NarError),
    /// Writing stdout failed.
    #[error("writing to stdout: {0}")]
    Stdout(std::io::Error),
    /// An argument names nothing in the store.
    #[error("{arg}: {reason}")]
    NotInStore { arg: String, reason: String },
    /// The daemon connection or an operation failed.
    #[error(transparent)]
    Daemon(#[from] daemon::Error),
}

/// Runs a `store` subcommand.
pub async fn run(cmd: StoreCommand) -> Result<ExitCode, StoreError> {
    match cmd {
        StoreCommand::Dump { path } => dump(&path).map(|()| ExitCode::SUCCESS),
        StoreCommand::Info {
            recursive,
            json,
            paths,
        } => info(&paths, recursive, json).await,
    }
}

fn dump(path: &Path) -> Result<(), StoreError> {
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return Err(StoreError::Terminal);
    }
    let mut out = stdout.lock();
    nar::dump(path, &mut out)?;
    out.flush().map_err(StoreError::Stdout)
}

/// Resolves a command-line argument to the store path it names, following
/// symlinks such as `./result` when it is not a store path itself.
pub fn resolve(arg: &str) -> Result<StorePath, StoreError> {
    if let Ok(p) = StorePath::parse(arg) {
        return Ok(p);
    }
    let not_in_store = |reason: String| StoreError::NotInStore {
        arg: arg.to_owned(),
        reason,
    };
    let real = std::fs::canonicalize(arg).map_err(|e| not_in_store(e.to_string()))?;
    let real = real
        .to_str()
        .ok_or_else(|| not_in_store("path is not UTF-8".into()))?;
    StorePath::from_path_prefix(real)
        .map(|(p, _)| p)
        .map_err(|e| {
            not_in_store(format!(
                "resolves to {real}, which is not in the store ({e})"
            ))
        })
}

async fn info(args: &[String], recursive: bool, json: bool) -> Result<ExitCode, StoreError> {
    let roots = args
        .iter()
        .map(|a| resolve(a))
        .collect::<Result<Vec<_>, _>>()?;
    let transport = daemon::connect_local().await?;
    let mut client = DaemonClient::connect(transport, ClientConfig::default()).await?;
    let mut infos: BTreeMap<StorePath, Option<PathInfo>> = BTreeMap::new();
    let mut queue: VecDeque<StorePath> = roots.into_iter().collect();
    while let Some(path) = queue.pop_front() {
        if infos.contains_key(&path) {
            continue;
        }
        let info = client.query_path_info(&path).await?;
        if recursive {
            if let Some(info) = &info {
                queue.extend(info.references.iter().cloned());
            }
        }
        infos.insert(path, info);
    }
    let all_valid = infos.values().all(Option::is_some);
    let mut out = std::io::stdout().lock();
    if json {
        let items: Vec<_> = infos
            .iter()
            .map(|(p, i)| PathInfoJson::new(p, i.as_ref()))
            .collect();
        let text = serde_json::to_string(&items).expect("path infos serialise to JSON");
        writeln!(out, "{text}").map_err(StoreError::Stdout)?;
    } else {
        for (path, info) in &infos {
            match info {
                Some(i) => writeln!(out, "{path}\t{}\t{}", i.nar_size, i.nar_hash),
                None => writeln!(out, "{path}\tnot valid"),
            }
            .map_err(StoreError::Stdout)?;
        }
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
