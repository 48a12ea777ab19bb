//! Making a node trust the deployer's signing key: its public key is added
//! to `extra-trusted-public-keys` in our block of `/etc/nix/nix.conf`
//! ([`deploy_remote::nix_conf`]). `extra-` appends to the default
//! (cache.nixos.org's key stays trusted); Nix 2.8 and 2.26 both honour it.
//! A second run writes nothing. Nothing is restarted: the node's
//! `nix-daemon` reads nix.conf when it starts, so restart it after a
//! [`TrustChange::Changed`]. The same block holds the other settings we
//! manage: the inventory's ([`configure`], which also takes out those the
//! inventory dropped) and the installer's ([`set_settings`], e.g.
//! `build-users-group` after installing Nix).

use deploy_remote::nix_conf::{self, with_inventory_settings, with_setting, with_word};
use deploy_ssh::SshSession;
use nix_wire::signing::PublicKey;

pub use deploy_remote::nix_conf::{Change as TrustChange, NixConfError as TrustError, NIX_CONF};

const SETTING: &str = "extra-trusted-public-keys";

/// Adds `key` to the trusted public keys in the node's nix.conf, over a
/// root SSH session. Restarts nothing.
pub async fn trust_key(session: &SshSession, key: &PublicKey) -> Result<TrustChange, TrustError> {
    let done = edit(session, None, Some(key)).await?;
    Ok(done.key.unwrap_or(TrustChange::Unchanged))
}

/// What [`configure`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Configured {
    /// Whether the settings changed nix.conf (`None`: none given, none
    /// taken out).
    pub settings: Option<TrustChange>,
    /// Whether the key was added (`None`: no key given).
    pub key: Option<TrustChange>,
}

/// Makes our block of the node's nix.conf hold the inventory's
/// `settings`, all of them: one the inventory set before and no longer
/// has loses its line ([`nix_conf::with_inventory_settings`]). Given
/// `key`, also adds it to the trusted public keys, in the same edit over
/// a root SSH session. One edit, because the settings may name the
/// trusted keys too (a binary cache's): setting them would drop the
/// deployer's key that adding it would then put back, rewriting nix.conf
/// on every run. Restarts nothing.
pub async fn configure(
    session: &SshSession,
    settings: &[(&str, &str)],
    key: Option<&PublicKey>,
) -> Result<Configured, TrustError> {
    let apply = |text: &str| with_inventory_settings(text, settings);
    let mut done = edit(session, Some(&apply), key).await?;
    if settings.is_empty() && done.settings == Some(TrustChange::Unchanged) {
        done.settings = None;
    }
    Ok(done)
}

/// Sets each `(name, value)` in our block of the node's nix.conf (other
/// settings are kept), over a root SSH session. Restarts nothing.
pub async fn set_settings(
    session: &SshSession,
    settings: &[(&str, &str)],
) -> Result<TrustChange, TrustError> {
    let apply = |text: &str| {
        settings
            .iter()
            .try_fold(text.to_owned(), |text, (name, value)| {
                with_setting(&text, name, value)
            })
    };
    let done = edit(session, Some(&apply), None).await?;
    Ok(done.settings.unwrap_or(TrustChange::Unchanged))
}

/// The text change `settings` makes to nix.conf.
type SettingsEdit<'a> = &'a (dyn Fn(&str) -> Result<String, String> + Sync);

/// Applies `settings` and, given `key`, adds it to the trusted keys, in
/// one edit of the node's nix.conf; what changed, each part judged
/// against the file as it was with the other part done.
async fn edit(
    session: &SshSession,
    settings: Option<SettingsEdit<'_>>,
    key: Option<&PublicKey>,
) -> Result<Configured, TrustError> {
    let key = key.map(|k| k.to_string());
    let with_key = |text: &str| match &key {
        Some(k) => with_word(text, SETTING, k),
        None => Ok(text.to_owned()),
    };
    let (mut settings_changed, mut key_added) = (false, false);
    nix_conf::edit(session, |old| {
        let set = match settings {
            Some(apply) => apply(old)?,
            None => old.to_owned(),
        };
        let new = with_key(&set)?;
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
        settings: settings.map(|_| change(settings_changed)),
        key: key.as_ref().map(|_| change(key_added)),
    })
}
