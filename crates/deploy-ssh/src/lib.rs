//! The SSH transport: one authenticated connection per node, opened with
//! ssh-agent or key files, configured by `ssh_config`, checked against
//! known_hosts, optionally through `ProxyJump` hosts, carrying several exec
//! channels (one of which typically runs [`DEFAULT_DAEMON_COMMAND`]). Pure
//! transport: it knows nothing of Nix and depends on no crate of ours.
//!
//! ```no_run
//! # async fn demo() -> Result<(), deploy_ssh::SshError> {
//! use deploy_ssh::{SshOptions, SshSession, Target};
//! let session = SshSession::connect(&Target::parse("root@node1")?, &SshOptions::default()).await?;
//! let out = session.run("uname -a").await?;
//! let daemon = session.exec(deploy_ssh::DEFAULT_DAEMON_COMMAND).await?;
//! # let _ = (out, daemon);
//! # Ok(()) }
//! ```

mod auth;
mod config;
mod error;
mod inbox;
mod known_hosts;
mod options;
mod process;
mod resolve;
mod session;
mod target;

pub use error::SshError;
pub use options::{Agent, ConfigFile, SshOptions, DEFAULT_DAEMON_COMMAND};
pub use process::{ExitStatus, Output, ProcessMonitor, ProcessStdio, RemoteProcess};
/// Key types of the API ([`SshOptions::identity_keys`], [`SshSession::host_key`]).
pub use russh::keys::ssh_key::private::Ed25519Keypair;
pub use russh::keys::{PrivateKey, PublicKey};
pub use session::SshSession;
pub use target::Target;

/// Entry points of the coverage-guided fuzz targets (`fuzz/`): the
/// parsers of files a user or an attacker may write. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    /// Parses `text` as an ssh_config file and resolves `host` with it.
    pub fn ssh_config(text: &str, host: &str) {
        if let Ok(config) = crate::config::SshConfig::parse(text, Path::new("fuzz")) {
            let _ = config.query(host);
        }
    }

    /// Reads `text` as a known_hosts file and looks `host` up in it.
    pub fn known_hosts(text: &str, host: &str, port: u16) {
        let name = crate::known_hosts::host_name(host, port);
        let _ = crate::known_hosts::entries_in(text, Path::new("fuzz"), &name);
    }
}
