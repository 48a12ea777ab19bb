//! Making a node trust the deployer's signing key: its public key is added
//! to `extra-trusted-public-keys` in our block of `/etc/nix/nix.conf`
//! ([`deploy_remote::nix_conf`]). `extra-` appends to the default
//! (cache.nixos.org's key stays trusted); Nix 2.8 and 2.26 both honour it.
//! A second run writes nothing. Nothing is restarted: the node's
//! `nix-daemon` reads nix.conf when it starts, so restart it after a
//! [`TrustChange::Changed`]. The same block holds the other settings we
//! manage ([`set_settings`], e.g. `build-users-group` after installing
//! Nix).

use deploy_remote::nix_conf::{self, with_setting, with_word};
use deploy_ssh::SshSession;
use nix_wire::signing::PublicKey;

pub use deploy_remote::nix_conf::{Change as TrustChange, NixConfError as TrustError, NIX_CONF};

const SETTING: &str = "extra-trusted-public-keys";

/// Adds `key` to the trusted public keys in the node's nix.conf, over a
/// root SSH session. Restarts nothing.
pub async fn trust_key(session: &SshSession, key: &PublicKey) -> Result<TrustChange, TrustError> {
    nix_conf::edit(session, |old| with_word(old, SETTING, &key.to_string())).await
}

/// Sets each `(name, value)` in our block of the node's nix.conf, over a
/// root SSH session. Restarts nothing.
pub async fn set_settings(
    session: &SshSession,
    settings: &[(&str, &str)],
) -> Result<TrustChange, TrustError> {
    nix_conf::edit(session, |old| {
        settings
            .iter()
            .try_fold(old.to_owned(), |text, (name, value)| {
                with_setting(&text, name, value)
            })
    })
    .await
}
