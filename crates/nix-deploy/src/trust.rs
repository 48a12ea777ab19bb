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
    let done = configure(session, &[], Some(key)).await?;
    Ok(done.key.unwrap_or(TrustChange::Unchanged))
}

/// What [`configure`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Configured {
    /// Whether the settings changed nix.conf (`None`: none given).
    pub settings: Option<TrustChange>,
    /// Whether the key was added (`None`: no key given).
    pub key: Option<TrustChange>,
}

/// Sets each `(name, value)` in our block of the node's nix.conf and,
/// given `key`, adds it to the trusted public keys, in one edit over a
/// root SSH session. One edit, because the settings may name the trusted
/// keys too (a binary cache's): setting them would drop the deployer's key
/// that adding it would then put back, rewriting nix.conf on every run.
/// Restarts nothing.
pub async fn configure(
    session: &SshSession,
    settings: &[(&str, &str)],
    key: Option<&PublicKey>,
) -> Result<Configured, TrustError> {
    let key = key.map(|k| k.to_string());
    let with_key = |text: &str| match &key {
        Some(k) => with_word(text, SETTING, k),
        None => Ok(text.to_owned()),
    };
    let (mut settings_changed, mut key_added) = (false, false);
    nix_conf::edit(session, |old| {
        let set = settings
            .iter()
            .try_fold(old.to_owned(), |text, (name, value)| {
                with_setting(&text, name, value)
            })?;
        let new = with_key(&set)?;
        // Each part judged against the file as it was with the other part
        // done, not as the other part left it.
        let old_with_key = with_key(old)?;
        settings_changed = new != old_with_key;
        key_added = old_with_key != old;
        Ok(new)
    })
    .await?;
    let change = |changed| match changed {
        true => TrustChange::Changed,
        false => TrustChange::Unchanged,
    };
    Ok(Configured {
        settings: (!settings.is_empty()).then(|| change(settings_changed)),
        key: key.as_ref().map(|_| change(key_added)),
    })
}

/// Sets each `(name, value)` in our block of the node's nix.conf, over a
/// root SSH session. Restarts nothing.
pub async fn set_settings(
    session: &SshSession,
    settings: &[(&str, &str)],
) -> Result<TrustChange, TrustError> {
    let done = configure(session, settings, None).await?;
    Ok(done.settings.unwrap_or(TrustChange::Unchanged))
}
