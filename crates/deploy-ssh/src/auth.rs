//! Owns user authentication: in-memory keys given by the caller first,
//! then keys from ssh-agent, then key files
//! (ed25519, ecdsa, rsa with rsa-sha2-512/256). Passphrases are never asked
//! for: an encrypted key file must be loaded into the agent. With
//! `IdentitiesOnly`, only agent keys matching a configured file are offered.
//! No key material is ever logged, only fingerprints and paths.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{Handle, Handler};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};

use crate::error::SshError;
use crate::known_hosts::describe;
use crate::options::Agent;
use crate::resolve::Endpoint;

/// A key file as found on disk.
enum FileKey {
    Plain(Arc<PrivateKey>),
    /// Passphrase-protected; the public half if it could be read.
    Encrypted(Option<PublicKey>),
}

struct LoadedFile {
    path: PathBuf,
    key: FileKey,
}

impl LoadedFile {
    fn public(&self) -> Option<&KeyData> {
        match &self.key {
            FileKey::Plain(k) => Some(k.public_key().key_data()),
            FileKey::Encrypted(p) => p.as_ref().map(|p| p.key_data()),
        }
    }
}

/// Loads the key files that exist; problems become `notes`.
fn load_files(paths: &[PathBuf], notes: &mut Vec<String>) -> Vec<LoadedFile> {
    let mut out = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "identity file not found, skipped");
                continue;
            }
            Err(e) => {
                notes.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let key = match russh::keys::decode_secret_key(&text, None) {
            Ok(key) => FileKey::Plain(Arc::new(key)),
            Err(russh::keys::Error::KeyIsEncrypted) => {
                FileKey::Encrypted(encrypted_public(&text, path))
            }
            Err(e) => {
                notes.push(format!("{}: unreadable key: {e}", path.display()));
                continue;
            }
        };
        out.push(LoadedFile {
            path: path.clone(),
            key,
        });
    }
    out
}

/// The public half of an encrypted key: in the clear in the OpenSSH format,
/// else from `PATH.pub`.
fn encrypted_public(text: &str, path: &Path) -> Option<PublicKey> {
    if let Ok(k) = PrivateKey::from_openssh(text) {
        return Some(k.public_key().clone());
    }
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    russh::keys::load_public_key(PathBuf::from(pub_path)).ok()
}

/// The agent's plain public keys, or `None` (with a note) if unreachable.
async fn agent_keys(
    agent: &Agent,
    notes: &mut Vec<String>,
) -> Option<(AgentClient<tokio::net::UnixStream>, Vec<PublicKey>)> {
    let socket = match agent {
        Agent::Disabled => return None,
        Agent::Socket(p) => p.clone(),
        Agent::Env => PathBuf::from(std::env::var_os("SSH_AUTH_SOCK")?),
    };
    let mut client = match AgentClient::connect_uds(&socket).await {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!(
                "ssh-agent at {} unreachable: {e}",
                socket.display()
            ));
            return None;
        }
    };
    match client.request_identities().await {
        Ok(ids) => {
            let keys = ids
                .into_iter()
                .filter_map(|id| match id {
                    AgentIdentity::PublicKey { key, .. } => Some(key),
                    AgentIdentity::Certificate { .. } => None,
                })
                .collect();
            Some((client, keys))
        }
        Err(e) => {
            notes.push(format!("ssh-agent at {} failed: {e}", socket.display()));
            None
        }
    }
}

/// Remembers the RSA signature hash once asked.
struct RsaHash(Option<HashAlg>);

impl RsaHash {
    async fn get<H: Handler>(&mut self, handle: &Handle<H>, key: &PublicKey) -> Option<HashAlg> {
        if !key.algorithm().is_rsa() {
            return None;
        }
        if self.0.is_none() {
            let best = match handle.best_supported_rsa_hash().await {
                Ok(Some(Some(h))) => h,
                _ => HashAlg::Sha512,
            };
            self.0 = Some(best);
        }
        self.0
    }
}

/// Offers a private key; whether the server accepted it.
async fn offer<H: Handler>(
    handle: &mut Handle<H>,
    rsa: &mut RsaHash,
    user: &str,
    key: &Arc<PrivateKey>,
) -> Result<bool, russh::Error> {
    let hash = rsa.get(handle, key.public_key()).await;
    let result = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
        .await?;
    Ok(result.success())
}

/// Authenticates `ep.user`, trying in-memory keys, agent keys, then key files.
pub(crate) async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    ep: &Endpoint,
    agent: &Agent,
) -> Result<(), SshError> {
    let protocol = |source| SshError::Protocol {
        host: ep.host.clone(),
        port: ep.port,
        source: Box::new(source),
    };
    let mut notes = Vec::new();
    let files = load_files(&ep.identity_files, &mut notes);
    let file_publics: HashSet<&KeyData> = files.iter().filter_map(LoadedFile::public).collect();
    let mut rsa = RsaHash(None);
    let mut tried: HashSet<KeyData> = HashSet::new();
    let mut agent_tried = Vec::new();
    let mut files_tried = Vec::new();

    for key in &ep.identity_keys {
        tracing::debug!(key = %describe(key.public_key()), host = %ep.host, "trying an in-memory key");
        tried.insert(key.public_key().key_data().clone());
        if offer(handle, &mut rsa, &ep.user, key)
            .await
            .map_err(protocol)?
        {
            return Ok(());
        }
        notes.push(format!(
            "in-memory key {} refused",
            describe(key.public_key())
        ));
    }

    if let Some((mut client, keys)) = agent_keys(agent, &mut notes).await {
        for key in keys {
            if ep.identities_only && !file_publics.contains(key.key_data()) {
                continue;
            }
            let hash = rsa.get(handle, &key).await;
            tracing::debug!(key = %describe(&key), host = %ep.host, "trying agent key");
            agent_tried.push(describe(&key));
            tried.insert(key.key_data().clone());
            match handle
                .authenticate_publickey_with(&ep.user, key, hash, &mut client)
                .await
            {
                Ok(r) if r.success() => return Ok(()),
                Ok(_) => {}
                Err(e) => notes.push(format!("agent could not sign: {e}")),
            }
        }
    }

    let mut encrypted = None;
    for file in &files {
        let key = match &file.key {
            FileKey::Plain(k) => k,
            FileKey::Encrypted(public) => {
                let offered = public
                    .as_ref()
                    .is_some_and(|p| tried.contains(p.key_data()));
                if !offered && encrypted.is_none() {
                    encrypted = Some(file.path.clone());
                }
                continue;
            }
        };
        if tried.contains(key.public_key().key_data()) {
            continue;
        }
        tracing::debug!(path = %file.path.display(), key = %describe(key.public_key()), host = %ep.host, "trying key file");
        files_tried.push(file.path.clone());
        if offer(handle, &mut rsa, &ep.user, key)
            .await
            .map_err(protocol)?
        {
            return Ok(());
        }
    }

    if let Some(path) = encrypted {
        return Err(SshError::EncryptedKey {
            user: ep.user.clone(),
            host: ep.host.clone(),
            port: ep.port,
            path,
        });
    }
    Err(SshError::AuthFailed {
        user: ep.user.clone(),
        host: ep.host.clone(),
        port: ep.port,
        agent_keys: agent_tried,
        files: files_tried,
        notes,
    })
}
