//! The SSH transport: one authenticated connection per node, opened with
//! ssh-agent or key files, configured by `ssh_config`, checked against
//! known_hosts, optionally through `ProxyJump` hosts, carrying several exec
//! channels (one of which typically runs `nix-daemon --stdio`). Pure
//! transport: it knows nothing of Nix.

mod config;
mod error;
mod known_hosts;
mod options;
mod resolve;
mod target;

pub use error::SshError;
pub use options::{Agent, ConfigFile, SshOptions, DEFAULT_DAEMON_COMMAND};
pub use target::Target;
