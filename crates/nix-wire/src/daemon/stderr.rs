//! The STDERR message loop (reference §3): log lines, activities, data
//! requests and the final LAST/ERROR of every operation.

use tokio::io::AsyncRead;
use tokio::sync::mpsc::UnboundedSender;

use crate::wire::{self, WireError, MAX_SHORT_STRING, MAX_TEXT};

use super::error::{DaemonError, Error, WireContext};
use super::version::ProtocolVersion;

/// A log line follows.
pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
/// The daemon asks for data.
pub const STDERR_READ: u64 = 0x6461_7461;
/// Data for the client's sink.
pub const STDERR_WRITE: u64 = 0x6461_7416;
/// End of the op's messages; the result follows.
pub const STDERR_LAST: u64 = 0x616c_7473;
/// The op failed.
pub const STDERR_ERROR: u64 = 0x6378_7470;
/// An activity starts.
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
/// An activity stops.
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
/// An activity reports a result.
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// Most fields we accept in one activity message (Nix sends a few), of at
/// most 64 KiB each: 4 MiB at most per message.
const MAX_FIELDS: u64 = 64;
/// Most traces we accept in one error, of at most 64 KiB each: 4 MiB at
/// most per error, with its message (1 MiB).
const MAX_TRACES: u64 = 64;

/// A field of an activity or result message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// An integer field.
    Int(u64),
    /// A string field.
    String(String),
}

/// Something the daemon said while working, for the caller's event sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonEvent {
    /// A log line (STDERR_NEXT), as sent (may contain ANSI escapes).
    Log(String),
    /// Data for the client (STDERR_WRITE, only obsolete ops).
    Write(Vec<u8>),
    /// An activity started.
    StartActivity {
        /// Activity id.
        id: u64,
        /// Verbosity level.
        level: u64,
        /// Activity type (e.g. 100 CopyPath, 105 Build).
        kind: u64,
        /// Description.
        text: String,
        /// Extra fields.
        fields: Vec<Field>,
        /// Parent activity id (0 = none).
        parent: u64,
    },
    /// An activity stopped.
    StopActivity {
        /// Activity id.
        id: u64,
    },
    /// An activity reported a result (progress, build log line, …).
    Result {
        /// Activity id.
        id: u64,
        /// Result type (e.g. 101 BuildLogLine, 105 Progress).
        kind: u64,
        /// The result's fields.
        fields: Vec<Field>,
    },
}

/// How a run of STDERR messages ended (errors are returned as `Err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StderrEnd {
    /// STDERR_LAST: the op's result follows.
    Last,
    /// STDERR_READ: the daemon wants up to this many bytes.
    Read(u64),
}

/// Reads STDERR messages until LAST, ERROR or READ. Events go to `events`
/// and to `tracing` at debug level; errors become [`Error::Daemon`].
pub(crate) async fn read_stderr<R>(
    r: &mut R,
    version: ProtocolVersion,
    events: Option<&UnboundedSender<DaemonEvent>>,
    op: &'static str,
) -> Result<StderrEnd, Error>
where
    R: AsyncRead + Unpin + ?Sized,
{
    loop {
        let code = wire::read_u64(r).await.during(op)?;
        let event = match code {
            STDERR_LAST => return Ok(StderrEnd::Last),
            STDERR_READ => return Ok(StderrEnd::Read(wire::read_u64(r).await.during(op)?)),
            STDERR_ERROR => {
                let error = read_error(r, version).await.during(op)?;
                tracing::debug!(op, error = %error, "daemon reported an error");
                return Err(Error::Daemon { op, error });
            }
            STDERR_NEXT => DaemonEvent::Log(
                wire::read_string_lossy(r, MAX_TEXT, "log line")
                    .await
                    .during(op)?,
            ),
            STDERR_WRITE => DaemonEvent::Write(
                wire::read_bytes(r, MAX_TEXT, "STDERR_WRITE data")
                    .await
                    .during(op)?,
            ),
            STDERR_START_ACTIVITY => DaemonEvent::StartActivity {
                id: wire::read_u64(r).await.during(op)?,
                level: wire::read_u64(r).await.during(op)?,
                kind: wire::read_u64(r).await.during(op)?,
                text: wire::read_string_lossy(r, MAX_TEXT, "activity text")
                    .await
                    .during(op)?,
                fields: read_fields(r).await.map_err(|e| e.into_error(op))?,
                parent: wire::read_u64(r).await.during(op)?,
            },
            STDERR_STOP_ACTIVITY => DaemonEvent::StopActivity {
                id: wire::read_u64(r).await.during(op)?,
            },
            STDERR_RESULT => DaemonEvent::Result {
                id: wire::read_u64(r).await.during(op)?,
                kind: wire::read_u64(r).await.during(op)?,
                fields: read_fields(r).await.map_err(|e| e.into_error(op))?,
            },
            other => {
                return Err(Error::protocol(
                    op,
                    format!("unknown STDERR message code 0x{other:x}"),
                ))
            }
        };
        tracing::debug!(op, ?event, "daemon");
        if let Some(tx) = events {
            // A closed receiver only means the caller stopped listening.
            let _ = tx.send(event);
        }
    }
}

/// A failure while reading fields: bad data or a bad tag.
enum FieldError {
    Wire(WireError),
    Tag(u64),
}

impl FieldError {
    fn into_error(self, op: &'static str) -> Error {
        match self {
            FieldError::Wire(source) => Error::Wire { op, source },
            FieldError::Tag(t) => Error::protocol(op, format!("unknown activity field type {t}")),
        }
    }
}

impl From<WireError> for FieldError {
    fn from(e: WireError) -> Self {
        FieldError::Wire(e)
    }
}

async fn read_fields<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<Vec<Field>, FieldError> {
    let n = wire::read_count(r, MAX_FIELDS, "activity field list").await?;
    let mut out = Vec::new();
    for _ in 0..n {
        match wire::read_u64(r).await? {
            0 => out.push(Field::Int(wire::read_u64(r).await?)),
            1 => out.push(Field::String(
                wire::read_string_lossy(r, MAX_SHORT_STRING, "activity field").await?,
            )),
            t => return Err(FieldError::Tag(t)),
        }
    }
    Ok(out)
}

async fn read_error<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    version: ProtocolVersion,
) -> Result<DaemonError, WireError> {
    if !version.at_least(26) {
        let raw_message = wire::read_string_lossy(r, MAX_TEXT, "error message").await?;
        let status = wire::read_u64(r).await?;
        return Ok(DaemonError {
            raw_message,
            raw_traces: Vec::new(),
            exit_status: Some(status),
            level: None,
        });
    }
    let kind = wire::read_string_lossy(r, MAX_SHORT_STRING, "error type").await?;
    if kind != "Error" {
        return Err(WireError::Malformed(format!(
            "structured error of type {kind:?}, expected \"Error\""
        )));
    }
    let level = wire::read_u64(r).await?;
    let _name = wire::read_string_lossy(r, MAX_SHORT_STRING, "error name").await?;
    let raw_message = wire::read_string_lossy(r, MAX_TEXT, "error message").await?;
    skip_pos(r).await?;
    let n = wire::read_count(r, MAX_TRACES, "error trace list").await?;
    let mut raw_traces = Vec::new();
    for _ in 0..n {
        skip_pos(r).await?;
        raw_traces.push(wire::read_string_lossy(r, MAX_SHORT_STRING, "error trace").await?);
    }
    Ok(DaemonError {
        raw_message,
        raw_traces,
        exit_status: None,
        level: Some(level),
    })
}

/// Error positions are always sent as "no position" (0).
async fn skip_pos<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<(), WireError> {
    match wire::read_u64(r).await? {
        0 => Ok(()),
        p => Err(WireError::Malformed(format!(
            "error position flag {p}; daemons always send 0"
        ))),
    }
}
