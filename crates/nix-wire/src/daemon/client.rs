//! [`DaemonClient`]: one connection to a daemon, its handshake and the
//! bookkeeping that decides whether the connection is still in sync after
//! an operation. The operations live in [`super::ops`] and
//! [`super::upload`].

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::sync::mpsc::UnboundedSender;

use crate::wire::{self, WireError};

use super::error::{Error, WireContext};
use super::handshake::{handshake, ClientConfig, Negotiated, Trust};
use super::idle::Idle;
use super::opcode as op;
use super::options::ClientOptions;
use super::stderr::{read_stderr, DaemonEvent, StderrEnd};
use super::version::ProtocolVersion;

/// How long to wait after a daemon error for the second copy that marks a
/// fatal (pre-startWork) error, after which the daemon hangs up (§3.3).
const FATAL_PROBE: Duration = Duration::from_millis(50);

/// A connection to a Nix daemon over any byte stream, after the handshake.
/// One operation at a time; a failure that leaves the stream out of sync
/// (I/O, protocol violation, cancellation, fatal daemon error) makes every
/// later call fail with [`Error::Poisoned`].
pub struct DaemonClient<S: AsyncRead + AsyncWrite + Unpin + Send> {
    pub(crate) stream: BufStream<Idle<S>>,
    pub(crate) neg: Negotiated,
    pub(crate) events: Option<UnboundedSender<DaemonEvent>>,
    pub(crate) poisoned: bool,
    /// Set by uploads whose stream ended out of sync whatever the error.
    pub(crate) force_poison: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> DaemonClient<S> {
    /// Performs the handshake on `stream` and returns the ready client.
    pub async fn connect(stream: S, config: ClientConfig) -> Result<Self, Error> {
        let mut stream = BufStream::new(Idle::new(stream, config.idle_timeout));
        let neg = handshake(&mut stream, &config).await?;
        Ok(Self {
            stream,
            neg,
            events: config.events,
            poisoned: false,
            force_poison: false,
        })
    }

    /// Ends the connection: flushes and closes our side of the stream, so
    /// the daemon sees end-of-file and exits (over SSH, its channel then
    /// closes; a dropped client leaves a `nix-daemon --stdio` waiting for
    /// input, holding one of the connection's sessions).
    pub async fn close(mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.shutdown().await
    }

    /// The negotiated protocol version (the minimum of both sides').
    pub fn version(&self) -> ProtocolVersion {
        self.neg.version
    }

    /// The version the daemon advertised.
    pub fn daemon_version(&self) -> ProtocolVersion {
        self.neg.daemon_version
    }

    /// The daemon's Nix version, e.g. `2.8.0` (protocol ≥ 1.33).
    pub fn nix_version(&self) -> Option<&str> {
        self.neg.nix_version.as_deref()
    }

    /// Whether the daemon trusts us (protocol ≥ 1.35).
    pub fn trust(&self) -> Option<Trust> {
        self.neg.trust
    }

    /// Features both sides support (protocol ≥ 1.38).
    pub fn features(&self) -> &[String] {
        &self.neg.features
    }

    /// Whether an earlier failure made the connection unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Marks the start of an op: until it ends cleanly the connection
    /// counts as out of sync (this also covers cancelled futures).
    pub(crate) fn begin(&mut self) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        self.poisoned = true;
        Ok(())
    }

    /// Ends an op: decides whether the connection is still in sync.
    pub(crate) async fn end<T>(&mut self, res: Result<T, Error>) -> Result<T, Error> {
        let forced = std::mem::take(&mut self.force_poison);
        self.poisoned = forced
            || match &res {
                Ok(_) => false,
                Err(Error::Daemon { .. } | Error::AlreadyValidRace { .. }) => {
                    self.daemon_hung_up().await
                }
                Err(
                    Error::NarSizeMismatch { .. }
                    | Error::NarSource { .. }
                    | Error::NarHashMismatch { .. }
                    | Error::PathNotValid(_)
                    | Error::InvalidRequest(_),
                ) => false,
                Err(_) => true,
            };
        res
    }

    /// After a daemon error: a fatal error is sent twice and followed by
    /// EOF, so anything readable right now means the connection is gone.
    /// Daemons send both copies back to back; if the second one arrives
    /// after the probe window, the next op reads it and fails (with the old
    /// message) and the connection is marked unusable then.
    async fn daemon_hung_up(&mut self) -> bool {
        match tokio::time::timeout(FATAL_PROBE, self.stream.fill_buf()).await {
            Err(_elapsed) => false,
            Ok(_) => {
                tracing::debug!("daemon closed the connection after a fatal error");
                true
            }
        }
    }

    pub(crate) async fn flush(&mut self, op: &'static str) -> Result<(), Error> {
        self.stream
            .flush()
            .await
            .map_err(WireError::from_io)
            .during(op)
    }

    /// Flushes the request and reads STDERR messages up to LAST.
    pub(crate) async fn finish_request(&mut self, op: &'static str) -> Result<(), Error> {
        self.flush(op).await?;
        match read_stderr(&mut self.stream, self.neg.version, self.events.as_ref(), op).await? {
            StderrEnd::Last => Ok(()),
            StderrEnd::Read(_) => Err(Error::protocol(op, "unexpected STDERR_READ")),
        }
    }

    /// Sends SetOptions.
    pub async fn set_options(&mut self, options: &ClientOptions) -> Result<(), Error> {
        const OP: &str = "SetOptions";
        self.begin()?;
        let res = async {
            wire::write_u64(&mut self.stream, op::SET_OPTIONS)
                .await
                .during(OP)?;
            options.write(&mut self.stream).await.during(OP)?;
            self.finish_request(OP).await
        }
        .await;
        self.end(res).await
    }
}
