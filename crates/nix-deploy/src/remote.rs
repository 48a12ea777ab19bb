//! Opening daemon-protocol connections to a node's store. A [`Connector`]
//! makes a fresh byte stream to the node's `nix-daemon --stdio` each time it
//! is asked; the copy engine opens several for parallel uploads. A connector
//! can measure its link ([`Connector::probe`]) and make variants of itself
//! whose connections are compressed: zstd through the node's receiver
//! ([`Connector::zstd`]) or a zlib SSH session ([`Connector::zlib`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deploy_remote::Limits;
use deploy_ssh::{ProcessMonitor, RemoteProcess, SshError, SshOptions, SshSession, Target};
use nix_wire::daemon::{self, StdioTransport};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::compress::{rendezvous_name, MaybeZstd, Receiver, Striped, ZstdControl, ZstdWriter};
use crate::link::{LinkEstimate, ProbeError};

/// Why a connection to a node's daemon could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The SSH exec channel could not be opened.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A local command could not be started.
    #[error(transparent)]
    Local(#[from] daemon::Error),
    /// The zstd compressor could not be set up.
    #[error("setting up zstd: {0}")]
    Compressor(#[source] std::io::Error),
}

/// Reads what the far end of a connection said on stderr so far (the
/// remote daemon's, and the receiver's, complaints).
pub type Said = Arc<dyn Fn() -> String + Send + Sync>;

/// Something that opens new byte streams to a node's Nix daemon.
pub trait Connector: Send + Sync {
    /// The stream type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens one more connection.
    fn connect(&self) -> impl Future<Output = Result<Self::Stream, ConnectError>> + Send;

    /// Names the node in messages, e.g. `root@10.0.0.2:22`.
    fn describe(&self) -> String;

    /// What the remote side of `stream` says on stderr, for errors (none
    /// by default).
    fn said(&self, stream: &Self::Stream) -> Option<Said> {
        let _ = stream;
        None
    }

    /// Measures the link to the node ([`crate::link`]). By default there is
    /// nothing to measure (a local command): the link counts as fast.
    fn probe(&self) -> impl Future<Output = Result<LinkEstimate, ProbeError>> + Send {
        std::future::ready(Err(ProbeError::NotALink))
    }

    /// Whether the transport compresses already (e.g. an SSH session with
    /// `Compression yes` in ssh_config), so compressing again buys nothing.
    fn compresses_already(&self) -> bool {
        false
    }

    /// The same node over a zlib-compressed transport, or why there is none.
    fn zlib(&self) -> impl Future<Output = Result<Self, String>> + Send
    where
        Self: Sized,
    {
        std::future::ready(Err("this connector has no compressed transport".to_owned()))
    }

    /// The same node with connections that zstd-compress what they send,
    /// decompressed on the node by `receiver` (already in the node's store),
    /// at the level `control` sets, each carried by `stripes` channels;
    /// checks that the receiver runs there first, and says why not.
    fn zstd(
        &self,
        receiver: &Receiver,
        control: Arc<ZstdControl>,
        stripes: usize,
    ) -> impl Future<Output = Result<Self, String>> + Send
    where
        Self: Sized,
    {
        let _ = (receiver, control, stripes);
        std::future::ready(Err("this connector can't run a receiver".to_owned()))
    }
}

/// How a connector's zstd connections are made.
#[derive(Clone)]
struct ZstdRoute<R> {
    /// The receiver (a package on a node, a program locally).
    receiver: R,
    control: Arc<ZstdControl>,
    /// Channels per connection.
    stripes: usize,
}

/// Connections over one SSH session: each is an exec channel running the
/// remote daemon command (by default `nix-daemon --stdio`), or the receiver
/// in front of it.
#[derive(Clone)]
pub struct SshConnector {
    session: Arc<SshSession>,
    command: String,
    reconnect: Option<(Target, SshOptions)>,
    /// For zstd connections.
    zstd: Option<ZstdRoute<Receiver>>,
    /// Whether the link may be probed.
    probe: bool,
}

impl SshConnector {
    /// Runs `command` (e.g. [`deploy_ssh::DEFAULT_DAEMON_COMMAND`] or
    /// `sudo nix-daemon --stdio`) on `session` for each connection.
    pub fn new(session: Arc<SshSession>, command: impl Into<String>) -> Self {
        Self {
            session,
            command: command.into(),
            reconnect: None,
            zstd: None,
            probe: true,
        }
    }

    /// Never probes the link (it counts as fast): for a session whose key
    /// runs one forced command whatever is asked, like a fan-out relay's.
    pub fn without_probe(mut self) -> Self {
        self.probe = false;
        self
    }

    /// Lets the copy engine open a second, zlib-compressed session to
    /// `target` (the session's own target and options) when it compresses
    /// and the node can't run the zstd receiver.
    pub fn with_zlib_fallback(mut self, target: Target, options: SshOptions) -> Self {
        self.reconnect = Some((target, options));
        self
    }
}

impl Connector for SshConnector {
    type Stream = MaybeZstd<RemoteProcess>;

    async fn connect(&self) -> Result<Self::Stream, ConnectError> {
        let Some(z) = &self.zstd else {
            return Ok(MaybeZstd::Left(self.session.exec(&self.command).await?));
        };
        let rendezvous = rendezvous_name();
        let lead = z.receiver.command(&self.command, z.stripes, &rendezvous);
        let joins = (1..z.stripes).map(|k| z.receiver.join_command(&rendezvous, k));
        let lead = self.session.exec(&lead);
        let others = futures_util::future::try_join_all(
            joins.map(|c| async move { self.session.exec(&c).await }),
        );
        let (lead, others) = tokio::try_join!(lead, others)?;
        let writer = ZstdWriter::new(Striped::new(lead, others), z.control.clone())
            .map_err(ConnectError::Compressor)?;
        Ok(MaybeZstd::Right(writer))
    }

    fn describe(&self) -> String {
        format!(
            "{}@{}:{}",
            self.session.user(),
            self.session.host(),
            self.session.port()
        )
    }

    fn said(&self, stream: &Self::Stream) -> Option<Said> {
        let monitors: Vec<ProcessMonitor> = match stream {
            MaybeZstd::Left(p) => vec![p.monitor()],
            MaybeZstd::Right(z) => z.get_ref().parts().iter().map(|p| p.monitor()).collect(),
        };
        Some(Arc::new(move || {
            monitors
                .iter()
                .map(ProcessMonitor::stderr_text)
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        }))
    }

    async fn probe(&self) -> Result<LinkEstimate, ProbeError> {
        if !self.probe {
            return Err(ProbeError::NotALink);
        }
        crate::link::probe(&self.session).await
    }

    fn compresses_already(&self) -> bool {
        self.session.is_compressed()
    }

    async fn zlib(&self) -> Result<Self, String> {
        let Some((target, options)) = &self.reconnect else {
            return Err("no second session was allowed (with_zlib_fallback)".to_owned());
        };
        let options = SshOptions {
            compression: Some(true),
            ..options.clone()
        };
        let session = SshSession::connect(target, &options)
            .await
            .map_err(|e| format!("no compressed session: {e}"))?;
        if !session.is_compressed() {
            return Err("the node's sshd does not compress (Compression no)".to_owned());
        }
        Ok(SshConnector::new(Arc::new(session), self.command.clone()))
    }

    async fn zstd(
        &self,
        receiver: &Receiver,
        control: Arc<ZstdControl>,
        stripes: usize,
    ) -> Result<Self, String> {
        let limits = Limits::DEFAULT.with_timeout(Duration::from_secs(30));
        let out = deploy_remote::probe(&self.session, &receiver.version_command(), limits)
            .await
            .map_err(|e| e.to_string())?;
        if !out.status.success() || !Receiver::answers(out.stdout.as_bytes()) {
            let said = if out.stderr.is_empty() {
                &out.stdout
            } else {
                &out.stderr
            };
            return Err(format!(
                "{} does not run on the node ({}): {said}",
                receiver.program(),
                out.status,
            ));
        }
        Ok(SshConnector {
            zstd: Some(ZstdRoute {
                receiver: receiver.clone(),
                control,
                stripes,
            }),
            ..self.clone()
        })
    }
}

/// Connections made by spawning a local command speaking the protocol on
/// its stdin/stdout, e.g. `nix-daemon --stdio --store /some/dir`. For tests
/// and for copying between local stores.
#[derive(Clone)]
pub struct CommandConnector {
    make: Arc<dyn Fn() -> tokio::process::Command + Send + Sync>,
    name: String,
    /// For zstd connections (the receiver program run locally).
    zstd: Option<ZstdRoute<PathBuf>>,
}

impl CommandConnector {
    /// `make` builds the command afresh for each connection.
    pub fn new(
        name: impl Into<String>,
        make: impl Fn() -> tokio::process::Command + Send + Sync + 'static,
    ) -> Self {
        Self {
            make: Arc::new(make),
            name: name.into(),
            zstd: None,
        }
    }
}

impl Connector for CommandConnector {
    type Stream = MaybeZstd<StdioTransport>;

    async fn connect(&self) -> Result<Self::Stream, ConnectError> {
        let command = (self.make)();
        let Some(z) = &self.zstd else {
            return Ok(MaybeZstd::Left(daemon::spawn_stdio(command)?));
        };
        // The receiver runs the command, as on a node.
        let rendezvous = rendezvous_name();
        let inner = command.as_std();
        let mut wrapped = tokio::process::Command::new(&z.receiver);
        wrapped
            .args(Receiver::lead_args(z.stripes, &rendezvous))
            .arg(inner.get_program())
            .args(inner.get_args());
        for (key, value) in inner.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = inner.get_current_dir() {
            wrapped.current_dir(dir);
        }
        let lead = daemon::spawn_stdio(wrapped)?;
        let others = (1..z.stripes)
            .map(|k| {
                let mut join = tokio::process::Command::new(&z.receiver);
                join.args(Receiver::join_args(&rendezvous, k));
                daemon::spawn_stdio(join)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let writer = ZstdWriter::new(Striped::new(lead, others), z.control.clone())
            .map_err(ConnectError::Compressor)?;
        Ok(MaybeZstd::Right(writer))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn zstd(
        &self,
        receiver: &Receiver,
        control: Arc<ZstdControl>,
        stripes: usize,
    ) -> Result<Self, String> {
        let program = receiver.program();
        let out = tokio::process::Command::new(&program)
            .arg("--version")
            .output()
            .await
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() || !Receiver::answers(&out.stdout) {
            return Err(format!("{program} --version: {}", out.status));
        }
        Ok(CommandConnector {
            zstd: Some(ZstdRoute {
                receiver: PathBuf::from(program),
                control,
                stripes,
            }),
            ..self.clone()
        })
    }
}
