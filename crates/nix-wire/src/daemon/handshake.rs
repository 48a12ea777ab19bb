//! The connection handshake (reference §2.3–§2.5): magic numbers, the
//! negotiated version, features and trust.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::wire::{self, MAX_SHORT_STRING};

use super::error::{Error, WireContext};
use super::stderr::{self, DaemonEvent, StderrEnd};
use super::version::ProtocolVersion;

/// Magic number the client sends first.
pub const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// Magic number the daemon answers with.
pub const WORKER_MAGIC_2: u64 = 0x6478_696f;

/// What the daemon says about our trust (protocol ≥ 1.35).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The daemon did not say (word 0).
    Unknown,
    /// We are a trusted user.
    Trusted,
    /// We are not trusted.
    NotTrusted,
}

/// How the client introduces itself.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Highest protocol version to advertise (1.21 … 1.38).
    pub max_version: ProtocolVersion,
    /// Feature names offered when the negotiated version is ≥ 1.38.
    pub features: Vec<String>,
    /// Where daemon log messages and activities go, if anywhere.
    pub events: Option<tokio::sync::mpsc::UnboundedSender<DaemonEvent>>,
    /// Inside an operation, how long the daemon may neither send nor take
    /// a byte before the operation fails with a timeout (`None`: wait for
    /// ever).
    pub idle_timeout: Option<std::time::Duration>,
}

impl Default for ClientConfig {
    /// Advertises 1.38 with an empty feature list and no event sink; 10
    /// minutes of silence inside an operation fail it.
    fn default() -> Self {
        Self {
            max_version: ProtocolVersion::LATEST,
            features: Vec::new(),
            events: None,
            idle_timeout: Some(super::idle::DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// What the handshake established.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    pub version: ProtocolVersion,
    pub daemon_version: ProtocolVersion,
    pub nix_version: Option<String>,
    pub trust: Option<Trust>,
    pub features: Vec<String>,
}

const OP: &str = "handshake";

/// Runs the handshake of §2.3 on a fresh stream.
pub(crate) async fn handshake<S>(s: &mut S, config: &ClientConfig) -> Result<Negotiated, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let client = config.max_version;
    if client < ProtocolVersion::MIN_SUPPORTED || client > ProtocolVersion::LATEST {
        return Err(Error::InvalidRequest(format!(
            "client protocol version {client} is outside the supported range {} … {}",
            ProtocolVersion::MIN_SUPPORTED,
            ProtocolVersion::LATEST
        )));
    }
    wire::write_u64(s, WORKER_MAGIC_1).await.during(OP)?;
    s.flush()
        .await
        .map_err(wire::WireError::from_io)
        .during(OP)?;
    let magic = wire::read_u64(s).await.during(OP)?;
    if magic != WORKER_MAGIC_2 {
        return Err(Error::protocol(
            OP,
            format!(
                "expected the daemon's magic number 0x{WORKER_MAGIC_2:x}, got 0x{magic:x} ({:?}); \
                 is something (a login shell rc file?) printing to the daemon's stdout?",
                String::from_utf8_lossy(&magic.to_le_bytes())
            ),
        ));
    }
    let raw = wire::read_u64(s).await.during(OP)?;
    let daemon = ProtocolVersion::from_wire(raw)
        .filter(|v| v.major == 1)
        .ok_or_else(|| {
            Error::protocol(
                OP,
                format!("daemon protocol version 0x{raw:x} has a major version other than 1"),
            )
        })?;
    if daemon < ProtocolVersion::MIN_SUPPORTED {
        return Err(Error::VersionTooOld(daemon));
    }
    let version = daemon.min(client);
    wire::write_u64(s, client.to_wire()).await.during(OP)?;
    let mut features = Vec::new();
    if version.at_least(38) {
        wire::write_strings(s, &config.features).await.during(OP)?;
        s.flush()
            .await
            .map_err(wire::WireError::from_io)
            .during(OP)?;
        let theirs = wire::read_strings(s, 1024, MAX_SHORT_STRING, "feature name")
            .await
            .during(OP)?;
        features = theirs
            .into_iter()
            .filter(|f| config.features.contains(f))
            .collect();
    }
    wire::write_u64(s, 0).await.during(OP)?; // CPU affinity: none
    wire::write_u64(s, 0).await.during(OP)?; // reserveSpace (obsolete)
    s.flush()
        .await
        .map_err(wire::WireError::from_io)
        .during(OP)?;
    let nix_version = if version.at_least(33) {
        Some(
            wire::read_string(s, MAX_SHORT_STRING, "daemon Nix version")
                .await
                .during(OP)?,
        )
    } else {
        None
    };
    let trust = if version.at_least(35) {
        Some(match wire::read_u64(s).await.during(OP)? {
            0 => Trust::Unknown,
            1 => Trust::Trusted,
            2 => Trust::NotTrusted,
            t => return Err(Error::protocol(OP, format!("unknown trust word {t}"))),
        })
    } else {
        None
    };
    match stderr::read_stderr(s, version, config.events.as_ref(), OP).await? {
        StderrEnd::Last => {}
        StderrEnd::Read(_) => {
            return Err(Error::protocol(
                OP,
                "daemon asked for data (STDERR_READ) during the handshake",
            ))
        }
    }
    tracing::debug!(%version, %daemon, ?nix_version, ?trust, "connected to the Nix daemon");
    Ok(Negotiated {
        version,
        daemon_version: daemon,
        nix_version,
        trust,
        features,
    })
}
