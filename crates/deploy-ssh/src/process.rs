//! Owns remote commands: [`RemoteProcess`] (a bidirectional stdin/stdout
//! stream, stderr collected up to a bound, the exit status) and [`Output`]
//! for simple commands. A task per channel moves SSH channel messages into
//! these.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use russh::{ChannelMsg, ChannelReadHalf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::error::SshError;
use crate::inbox::{inbox, Inbox, InboxWriter, INBOX_CAP};

/// The most stdout [`RemoteProcess::finish`] keeps.
pub const MAX_STDOUT: usize = 64 << 20;

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(u32),
    /// It was killed by a signal.
    Signal {
        /// The signal name, e.g. `KILL`.
        signal: String,
        /// The server's message, often empty.
        message: String,
    },
    /// The channel closed without an exit status (e.g. the connection died).
    NotReported,
}

impl ExitStatus {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal { signal, message } if message.is_empty() => {
                write!(f, "killed by signal {signal}")
            }
            ExitStatus::Signal { signal, message } => {
                write!(f, "killed by signal {signal} ({message})")
            }
            ExitStatus::NotReported => write!(f, "no exit status (channel closed)"),
        }
    }
}

/// The result of [`SshSession::run`](crate::SshSession::run).
#[derive(Debug, Clone)]
pub struct Output {
    /// How the command ended.
    pub status: ExitStatus,
    /// All of stdout.
    pub stdout: Vec<u8>,
    /// Stderr, up to the configured bound.
    pub stderr: Vec<u8>,
}

/// Stderr kept up to a bound: the head is kept, the rest counted.
#[derive(Debug, Default)]
struct Collected {
    bytes: Vec<u8>,
    dropped: usize,
    limit: usize,
}

impl Collected {
    fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        let take = room.min(data.len());
        self.bytes.extend_from_slice(&data[..take]);
        self.dropped += data.len() - take;
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        if self.dropped > 0 {
            out.extend_from_slice(
                format!("\n[{} more bytes of stderr dropped]", self.dropped).as_bytes(),
            );
        }
        out
    }
}

/// A command running on the node.
///
/// Reading gives its stdout, writing feeds its stdin, shutting the write
/// side down sends EOF. Use [`into_parts`](Self::into_parts) to hand the
/// stream to a protocol client while keeping stderr and the exit status.
pub struct RemoteProcess {
    stdio: ProcessStdio,
    monitor: ProcessMonitor,
}

/// The stdin/stdout stream of a [`RemoteProcess`].
pub struct ProcessStdio {
    stdout: Inbox,
    stdin: Pin<Box<dyn AsyncWrite + Send + Sync>>,
}

/// Stderr and exit status of a [`RemoteProcess`].
#[derive(Clone)]
pub struct ProcessMonitor {
    stderr: Arc<Mutex<Collected>>,
    status: watch::Receiver<Option<ExitStatus>>,
    node: String,
    command: String,
}

impl RemoteProcess {
    /// Starts moving the messages of an exec channel.
    pub(crate) fn start(
        read: ChannelReadHalf,
        stdin: impl AsyncWrite + Send + Sync + 'static,
        stderr_limit: usize,
        node: String,
        command: String,
    ) -> Self {
        let (stdout_writer, stdout) = inbox(INBOX_CAP);
        let stderr = Arc::new(Mutex::new(Collected {
            limit: stderr_limit,
            ..Collected::default()
        }));
        let (status_tx, status) = watch::channel(None);
        tokio::spawn(pump(read, stdout_writer, Arc::clone(&stderr), status_tx));
        RemoteProcess {
            stdio: ProcessStdio {
                stdout,
                stdin: Box::pin(stdin),
            },
            monitor: ProcessMonitor {
                stderr,
                status,
                node,
                command,
            },
        }
    }

    /// Splits into the stream and the monitor.
    pub fn into_parts(self) -> (ProcessStdio, ProcessMonitor) {
        (self.stdio, self.monitor)
    }

    /// The stderr collected so far (bounded).
    pub fn stderr(&self) -> Vec<u8> {
        self.monitor.stderr()
    }

    /// A handle on stderr and the exit status that outlives the process.
    pub fn monitor(&self) -> ProcessMonitor {
        self.monitor.clone()
    }

    /// Sends EOF, reads stdout to its end and waits for the exit status;
    /// returns the status and the stdout (at most `MAX_STDOUT` bytes:
    /// more is [`SshError::TooMuchOutput`]).
    pub async fn finish(self) -> Result<(ExitStatus, Vec<u8>), SshError> {
        self.finish_bounded(MAX_STDOUT).await
    }

    /// [`finish`](Self::finish) keeping at most `limit` bytes of stdout;
    /// past that it stops reading and returns [`SshError::TooMuchOutput`]
    /// at once (the command is not waited for).
    pub async fn finish_bounded(mut self, limit: usize) -> Result<(ExitStatus, Vec<u8>), SshError> {
        let io = |source| SshError::Io {
            node: self.monitor.node.clone(),
            command: self.monitor.command.clone(),
            source,
        };
        // The command may exit without reading stdin: EOF failing is fine.
        if let Err(e) = self.stdio.shutdown().await {
            tracing::debug!(error = %e, "sending EOF to a finished command");
        }
        let mut stdout = Vec::new();
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        (&mut self.stdio)
            .take(cap)
            .read_to_end(&mut stdout)
            .await
            .map_err(io)?;
        if stdout.len() > limit {
            return Err(SshError::TooMuchOutput {
                node: self.monitor.node.clone(),
                command: self.monitor.command.clone(),
                limit,
            });
        }
        Ok((self.monitor.wait().await, stdout))
    }
}

impl ProcessMonitor {
    /// The stderr collected so far (bounded, with a note of dropped bytes).
    pub fn stderr(&self) -> Vec<u8> {
        match self.stderr.lock() {
            Ok(c) => c.snapshot(),
            Err(poisoned) => poisoned.into_inner().snapshot(),
        }
    }

    /// The stderr so far as text, lossily decoded and trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr()).trim().to_string()
    }

    /// The exit status if the command has ended.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.status.borrow().clone()
    }

    /// Waits for the channel to close. Stdout must be read or the
    /// [`ProcessStdio`] dropped, or this waits forever on a chatty command.
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.status.clone();
        let status = match rx.wait_for(Option::is_some).await {
            Ok(s) => s.clone().unwrap_or(ExitStatus::NotReported),
            Err(_) => ExitStatus::NotReported,
        };
        status
    }
}

/// Drains the channel's messages as they come, never waiting on a reader
/// (see [`crate::inbox`]): stdout into the inbox, stderr into its bounded
/// collection, then the exit status.
async fn pump(
    mut read: ChannelReadHalf,
    stdout: InboxWriter,
    stderr: Arc<Mutex<Collected>>,
    status_tx: watch::Sender<Option<ExitStatus>>,
) {
    let mut status = None;
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => stdout.push(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => match stderr.lock() {
                Ok(mut c) => c.push(&data),
                Err(poisoned) => poisoned.into_inner().push(&data),
            },
            ChannelMsg::Eof => stdout.end(),
            ChannelMsg::ExitStatus { exit_status } => status = Some(ExitStatus::Code(exit_status)),
            ChannelMsg::ExitSignal {
                signal_name,
                error_message,
                ..
            } => {
                status = Some(ExitStatus::Signal {
                    signal: format!("{signal_name:?}"),
                    message: error_message,
                })
            }
            ChannelMsg::Failure => {
                let note = b"sshd refused to run the command\n";
                match stderr.lock() {
                    Ok(mut c) => c.push(note),
                    Err(poisoned) => poisoned.into_inner().push(note),
                }
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    drop(stdout);
    // Nobody listening is fine.
    let _ = status_tx.send(Some(status.unwrap_or(ExitStatus::NotReported)));
}

impl AsyncRead for ProcessStdio {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for ProcessStdio {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.stdin.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stdin.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stdin.as_mut().poll_shutdown(cx)
    }
}

impl AsyncRead for RemoteProcess {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdio).poll_read(cx, buf)
    }
}

impl AsyncWrite for RemoteProcess {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdio).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdio).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdio).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a protocol client needs from the stream.
    #[test]
    fn stdio_is_a_sendable_stream() {
        fn assert_stream<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static>() {}
        assert_stream::<ProcessStdio>();
        assert_stream::<RemoteProcess>();
    }

    #[test]
    fn stderr_is_bounded() {
        let mut c = Collected {
            limit: 4,
            ..Collected::default()
        };
        c.push(b"abc");
        c.push(b"defg");
        assert_eq!(
            c.snapshot(),
            b"abcd\n[3 more bytes of stderr dropped]".to_vec()
        );
    }
}
