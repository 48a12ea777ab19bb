//! Opening daemon-protocol connections to a node's store. A [`Connector`]
//! makes a fresh byte stream to the node's `nix-daemon --stdio` each time it
//! is asked; the copy engine opens several for parallel uploads.

use std::future::Future;
use std::sync::Arc;

use deploy_ssh::{RemoteProcess, SshError, SshOptions, SshSession, Target};
use nix_wire::daemon::{self, StdioTransport};
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a connection to a node's daemon could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The SSH exec channel could not be opened.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A local command could not be started.
    #[error(transparent)]
    Local(#[from] daemon::Error),
}

/// Something that opens new byte streams to a node's Nix daemon.
pub trait Connector: Send + Sync {
    /// The stream type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens one more connection.
    fn connect(&self) -> impl Future<Output = Result<Self::Stream, ConnectError>> + Send;

    /// Names the node in messages, e.g. `root@10.0.0.2:22`.
    fn describe(&self) -> String;

    /// The same node over a compressed transport, for a slow link; `None`
    /// if this connector has no such variant (or is one already).
    fn compressed(&self) -> impl Future<Output = Option<Self>> + Send
    where
        Self: Sized,
    {
        std::future::ready(None)
    }
}

/// Connections over one SSH session: each is an exec channel running the
/// remote daemon command (by default `nix-daemon --stdio`).
#[derive(Clone)]
pub struct SshConnector {
    session: Arc<SshSession>,
    command: String,
    reconnect: Option<(Target, SshOptions)>,
}

impl SshConnector {
    /// Runs `command` (e.g. [`deploy_ssh::DEFAULT_DAEMON_COMMAND`] or
    /// `sudo nix-daemon --stdio`) on `session` for each connection.
    pub fn new(session: Arc<SshSession>, command: impl Into<String>) -> Self {
        Self {
            session,
            command: command.into(),
            reconnect: None,
        }
    }

    /// Lets the copy engine open a second, compressed session to `target`
    /// (the session's own target and options) when it finds the link slow.
    pub fn with_compression_fallback(mut self, target: Target, options: SshOptions) -> Self {
        self.reconnect = Some((target, options));
        self
    }
}

impl Connector for SshConnector {
    type Stream = RemoteProcess;

    async fn connect(&self) -> Result<RemoteProcess, ConnectError> {
        Ok(self.session.exec(&self.command).await?)
    }

    fn describe(&self) -> String {
        format!(
            "{}@{}:{}",
            self.session.user(),
            self.session.host(),
            self.session.port()
        )
    }

    async fn compressed(&self) -> Option<Self> {
        let (target, options) = self.reconnect.as_ref()?;
        if self.session.is_compressed() {
            return None;
        }
        let options = SshOptions {
            compression: Some(true),
            ..options.clone()
        };
        match SshSession::connect(target, &options).await {
            Ok(session) => Some(SshConnector::new(Arc::new(session), self.command.clone())),
            Err(e) => {
                tracing::debug!(node = %self.describe(), error = %e, "no compressed session; staying uncompressed");
                None
            }
        }
    }
}

/// Connections made by spawning a local command speaking the protocol on
/// its stdin/stdout, e.g. `nix-daemon --stdio --store /some/dir`. For tests
/// and for copying between local stores.
pub struct CommandConnector {
    make: Box<dyn Fn() -> tokio::process::Command + Send + Sync>,
    name: String,
}

impl CommandConnector {
    /// `make` builds the command afresh for each connection.
    pub fn new(
        name: impl Into<String>,
        make: impl Fn() -> tokio::process::Command + Send + Sync + 'static,
    ) -> Self {
        Self {
            make: Box::new(make),
            name: name.into(),
        }
    }
}

impl Connector for CommandConnector {
    type Stream = StdioTransport;

    async fn connect(&self) -> Result<StdioTransport, ConnectError> {
        Ok(daemon::spawn_stdio((self.make)())?)
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
