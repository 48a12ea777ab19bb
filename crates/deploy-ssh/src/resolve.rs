//! Owns the merge of a [`Target`], the `ssh_config` options for it and the
//! [`SshOptions`] into one [`Endpoint`]: what a single hop connects to and
//! with which keys, known_hosts files and timeouts. Precedence: the target,
//! then `ssh_config`, then the options, then OpenSSH's defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{PrivateKey, PublicKey};

use crate::config::{expand_path, expand_tokens, HostConfig, SshConfig, Tokens};
use crate::error::SshError;
use crate::options::{ConfigFile, SshOptions};
use crate::target::Target;

/// The system-wide known_hosts file, read after the user's (never written).
const GLOBAL_KNOWN_HOSTS: &str = "/etc/ssh/ssh_known_hosts";

/// One hop, fully resolved.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The host name or address to connect to (after `HostName`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    /// In-memory keys, tried first.
    pub identity_keys: Vec<Arc<PrivateKey>>,
    pub identities_only: bool,
    /// Keys accepted without known_hosts (the target's only).
    pub pinned_host_keys: Vec<PublicKey>,
    /// Files to check; a new key is appended to the first.
    pub known_hosts_files: Vec<PathBuf>,
    pub accept_new: bool,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
    /// Compress the connection (zlib, as OpenSSH's `Compression yes`).
    pub compression: bool,
    /// Hops to go through first, in order (`ProxyJump`).
    pub jumps: Vec<Target>,
}

impl Endpoint {
    /// `user@host:port`, for messages.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Loads the config file chosen by the options (none if absent).
pub(crate) fn load_config(opts: &SshOptions) -> Result<SshConfig, SshError> {
    match &opts.config_file {
        ConfigFile::None => Ok(SshConfig::default()),
        ConfigFile::Path(path) => SshConfig::load(path),
        ConfigFile::Default => {
            let path = opts.home.join(".ssh/config");
            if path.exists() {
                SshConfig::load(&path)
            } else {
                Ok(SshConfig::default())
            }
        }
    }
}

/// The local login name: `$USER`, `$LOGNAME`, else `root`.
fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".to_string())
}

/// Resolves `target` with `config`; `with_jumps` is false for jump hosts,
/// whose own `ProxyJump` is ignored (list chained hops in one `ProxyJump`).
pub(crate) fn resolve(
    target: &Target,
    config: &SshConfig,
    opts: &SshOptions,
    with_jumps: bool,
) -> Result<Endpoint, SshError> {
    let hc: HostConfig = config.query(&target.host);
    let local_user = local_user();
    let port = target.port.or(hc.port).unwrap_or(22);
    let user = target
        .user
        .clone()
        .or(hc.user.clone())
        .or(opts.default_user.clone())
        .unwrap_or_else(|| local_user.clone());
    let host_tokens = Tokens {
        host: &target.host,
        alias: &target.host,
        port,
        remote_user: &user,
        local_user: &local_user,
        home: &opts.home,
    };
    let host = match &hc.hostname {
        Some(h) => expand_tokens(h, &host_tokens),
        None => target.host.clone(),
    };
    let tokens = Tokens {
        host: &host,
        ..host_tokens
    };
    let mut identity_files: Vec<PathBuf> = hc
        .identity_files
        .iter()
        .map(|f| expand_path(f, &tokens))
        .collect();
    identity_files.extend(opts.identity_files.iter().cloned());
    if identity_files.is_empty() {
        identity_files = ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|name| opts.home.join(".ssh").join(name))
            .filter(|p| p.exists())
            .collect();
    }
    let known_hosts_files = if !opts.known_hosts_files.is_empty() {
        opts.known_hosts_files.clone()
    } else {
        let mut files: Vec<PathBuf> = match &hc.user_known_hosts_files {
            Some(files) => files.iter().map(|f| expand_path(f, &tokens)).collect(),
            None => vec![opts.home.join(".ssh/known_hosts")],
        };
        files.push(PathBuf::from(GLOBAL_KNOWN_HOSTS));
        files
    };
    let accept_new = opts.accept_new_host_keys
        || matches!(
            hc.strict_host_key_checking.as_deref(),
            Some("accept-new" | "no" | "off")
        );
    let jumps = match (&hc.proxy_jump, with_jumps) {
        (Some(spec), true) if !spec.eq_ignore_ascii_case("none") => spec
            .split(',')
            .map(|hop| Target::parse(hop.trim()))
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    Ok(Endpoint {
        host,
        port,
        user,
        identity_files,
        identity_keys: opts.identity_keys.clone(),
        identities_only: hc.identities_only.unwrap_or(false),
        pinned_host_keys: match with_jumps {
            true => opts.pinned_host_keys.clone(),
            false => Vec::new(),
        },
        known_hosts_files,
        accept_new,
        connect_timeout: hc
            .connect_timeout
            .map(Duration::from_secs)
            .unwrap_or(opts.connect_timeout),
        keepalive_interval: hc
            .server_alive_interval
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(opts.keepalive_interval),
        keepalive_max: hc.server_alive_count_max.unwrap_or(opts.keepalive_max),
        compression: opts.compression.or(hc.compression).unwrap_or(false),
        jumps,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn target_beats_config_beats_defaults() {
        let config = match SshConfig::parse(
            "Host node1\n HostName 10.0.0.%h\n User admin\n Port 2200\n IdentityFile ~/k/%h\n ProxyJump bastion, root@b2:2222\n",
            Path::new("c"),
        ) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let opts = SshOptions {
            home: PathBuf::from("/h"),
            ..SshOptions::default()
        };
        let target = Target {
            user: None,
            host: "node1".into(),
            port: Some(22),
        };
        let e = match resolve(&target, &config, &opts, true) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(e.host, "10.0.0.node1");
        assert_eq!(e.port, 22);
        assert_eq!(e.user, "admin");
        assert_eq!(e.identity_files, vec![PathBuf::from("/h/k/10.0.0.node1")]);
        assert_eq!(
            e.known_hosts_files,
            vec![
                PathBuf::from("/h/.ssh/known_hosts"),
                PathBuf::from(GLOBAL_KNOWN_HOSTS)
            ]
        );
        assert_eq!(e.jumps.len(), 2);
        assert_eq!(e.jumps[1].port, Some(2222));
        let e = match resolve(&target, &config, &opts, false) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        };
        assert!(e.jumps.is_empty());
    }
}
