//! The SSH transport: one authenticated connection per node, opened with
//! ssh-agent or key files, configured by `ssh_config`, checked against
//! known_hosts, optionally through `ProxyJump` hosts, carrying several exec
//! channels (one of which typically runs [`DEFAULT_DAEMON_COMMAND`]). Pure
//! transport: it knows nothing of Nix.
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
pub use session::SshSession;
pub use target::Target;
