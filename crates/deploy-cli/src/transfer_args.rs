//! `--compression`, `--receiver` and `--substitute-on-node`, shared by
//! `deploy copy` and the deploy itself: whether copies compress, with what
//! the nodes decompress, and whether nodes first fetch from their caches.
//!
//! The receiver (`nix-deploy-receive`, the `deploy-receive` crate) is a
//! package in the local store. By default it is the one this `deploy` was
//! built with: the flake's package bakes its store path in at build time
//! (`NIX_DEPLOY_RECEIVER`), so `nix run .#deploy` always has one for its
//! own system. `--receiver PATH` names another, `--receiver none` none
//! (compressed copies then use zlib).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use nix_deploy::compress::{Receiver, ReceiverError};
use nix_deploy::copy::{Compression, Substitute};
use nix_wire::StorePath;

/// The receiver this binary was built with, if any.
const BUILT_IN_RECEIVER: Option<&str> = option_env!("NIX_DEPLOY_RECEIVER");

/// How copies compress.
#[derive(Args, Debug, Clone)]
pub struct TransferArgs {
    /// Compress copies: `auto` measures each node's link before the first
    /// upload and compresses (zstd through the node's receiver, else zlib)
    /// when it carries less than 64 MiB/s; `yes` always; `no` never (not
    /// even when ssh_config says `Compression yes`).
    #[arg(long, value_enum, default_value_t = CompressionArg::Auto)]
    pub compression: CompressionArg,
    /// The nix-deploy-receive package (a store path, or a link to one like
    /// ./result) that decompresses zstd on the nodes; `none` for zlib only.
    /// Default: the one this deploy was built with, if any.
    #[arg(long, value_name = "PATH")]
    pub receiver: Option<PathBuf>,
    /// Let nodes fetch what their own binary caches (their nix.conf
    /// `substituters`) have before the upload: `auto` asks them and uses
    /// the caches that answer within 10 s; `yes` waits for them however
    /// long; `no` uploads everything (the flag alone means `yes`).
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = SubstituteArg::Auto,
          num_args = 0..=1, default_missing_value = "yes")]
    pub substitute_on_node: SubstituteArg,
}

/// `--substitute-on-node` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubstituteArg {
    /// When the node's caches answer in time.
    Auto,
    /// Always, however long they take.
    Yes,
    /// Never.
    No,
}

/// `--compression` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionArg {
    /// Compress when the measured link is slow.
    Auto,
    /// Always compress.
    Yes,
    /// Never compress.
    No,
}

/// Why the receiver can't be used.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverArgError {
    /// `--receiver` is not a store path.
    #[error("--receiver: {0}")]
    NotStorePath(#[from] crate::store::StoreError),
    /// The package is not a usable receiver.
    #[error("--receiver: {0}")]
    Package(#[from] ReceiverError),
}

impl TransferArgs {
    /// The copy engine's compression.
    pub fn compression(&self) -> Compression {
        match self.compression {
            CompressionArg::Auto => Compression::Auto,
            CompressionArg::Yes => Compression::Always,
            CompressionArg::No => Compression::Never,
        }
    }

    /// Whether nodes substitute from their own caches first.
    pub fn substitute(&self) -> Substitute {
        match self.substitute_on_node {
            SubstituteArg::Auto => Substitute::default(),
            SubstituteArg::Yes => Substitute::Always,
            SubstituteArg::No => Substitute::Never,
        }
    }

    /// What the SSH sessions' own (zlib) compression is forced to: off with
    /// `--compression no`, else as ssh_config says.
    pub fn ssh_compression(&self) -> Option<bool> {
        (self.compression == CompressionArg::No).then_some(false)
    }

    /// The receiver: `--receiver` (an error if it is unusable), else the
    /// built-in one (a warning on stderr if it is unusable).
    pub fn receiver(&self) -> Result<Option<Receiver>, ReceiverArgError> {
        match &self.receiver {
            Some(p) if p.as_os_str() == "none" => Ok(None),
            Some(p) => {
                let path = crate::store::resolve(&p.to_string_lossy())?;
                Ok(Some(Receiver::from_package(path)?))
            }
            None => Ok(BUILT_IN_RECEIVER.and_then(|p| {
                let r = StorePath::parse(p)
                    .map_err(|e| e.to_string())
                    .and_then(|p| Receiver::from_package(p).map_err(|e| e.to_string()));
                r.map_err(|e| eprintln!("warning: the built-in receiver can't be used ({e}): compressed copies use zlib"))
                    .ok()
            })),
        }
    }
}
