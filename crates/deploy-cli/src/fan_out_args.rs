//! `--fan-out`, `--relay` and `--fan-out-key-lifetime`: whether a deploy
//! feeds nodes from each other ([`nix_deploy::fanout`]) and with which
//! relay.
//!
//! The relay (`nix-deploy-relay`, the `deploy-relay` crate) is a package in
//! the local store. By default it is the one this `deploy` was built with:
//! the flake's package bakes its store path in at build time
//! (`NIX_DEPLOY_RELAY`), as it does the receiver's. `--relay PATH` names
//! another; without one, every node is copied to directly.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use nix_deploy::fanout::{FanOutOptions, Relay, DEFAULT_DEGREE, DEFAULT_KEY_LIFETIME};
use nix_wire::StorePath;

use crate::store::StoreError;

/// The relay this binary was built with, if any.
const BUILT_IN_RELAY: Option<&str> = option_env!("NIX_DEPLOY_RELAY");

/// How a deploy fans out.
#[derive(Args, Debug, Clone)]
pub struct FanOutArgs {
    /// `auto`: each missing path crosses this machine's uplink once, to the
    /// node lacking most, and the other nodes get it node to node (nodes
    /// that can't reach each other get a direct copy); `off`: every node
    /// gets its closure from here.
    #[arg(long, value_enum, default_value_t = FanOutArg::Auto)]
    pub fan_out: FanOutArg,
    /// The nix-deploy-relay package (a store path, or a link to one like
    /// ./result) run on feeding nodes. Default: the one this deploy was
    /// built with, if any (else fan-out is off).
    #[arg(long, value_name = "PATH")]
    pub relay: Option<PathBuf>,
    /// Seconds a relay's key stays authorized on a node at most: it is
    /// removed when the node is fed, and expires by itself after a killed
    /// deploy.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_KEY_LIFETIME.as_secs())]
    pub fan_out_key_lifetime: u64,
}

/// `--fan-out` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanOutArg {
    /// Fan out when at least two nodes lack something.
    Auto,
    /// Never.
    Off,
}

/// Why the relay can't be used.
#[derive(Debug, thiserror::Error)]
#[error("--relay: {0}")]
pub struct RelayArgError(#[from] StoreError);

impl FanOutArgs {
    /// The fan-out options, or `None` when fan-out is off or there is no
    /// relay.
    pub fn options(&self) -> Result<Option<FanOutOptions>, RelayArgError> {
        if self.fan_out == FanOutArg::Off {
            return Ok(None);
        }
        let package = match &self.relay {
            Some(p) => Some(crate::store::resolve(&p.to_string_lossy())?),
            None => BUILT_IN_RELAY.and_then(|p| StorePath::parse(p).ok()),
        };
        Ok(package.map(|package| FanOutOptions {
            relay: Relay::new(package),
            degree: DEFAULT_DEGREE,
            key_lifetime: Duration::from_secs(self.fan_out_key_lifetime.max(1)),
        }))
    }
}
