//! Local transports: the daemon's Unix socket and a spawned
//! `nix-daemon --stdio` (which also serves single-user installs such as
//! Debian's without a running daemon, and chroot stores via `--store`).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::Sleep;

use super::error::Error;

/// Where the daemon listens unless `NIX_DAEMON_SOCKET_PATH` says otherwise.
pub const DEFAULT_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";

/// Most of a child's stderr we keep for error messages.
const STDERR_KEEP: usize = 16 * 1024;

/// How long to wait for a dead child's stderr to close.
const STDERR_GRACE: Duration = Duration::from_secs(2);

/// The socket path Nix would use: `$NIX_DAEMON_SOCKET_PATH` or the default.
pub fn default_socket_path() -> PathBuf {
    std::env::var_os("NIX_DAEMON_SOCKET_PATH")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// Connects to the daemon socket at `path` (`None`: [`default_socket_path`]).
pub async fn connect_socket(path: Option<&Path>) -> Result<UnixStream, Error> {
    let socket = path.map_or_else(default_socket_path, Path::to_path_buf);
    UnixStream::connect(&socket)
        .await
        .map_err(|e| connect_error(socket, e))
}

/// Turns a failed connect into an error that says what to do.
fn connect_error(socket: PathBuf, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Error::PermissionDenied { socket },
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            Error::NoDaemon { socket, reason: e }
        }
        _ => Error::Connect { socket, source: e },
    }
}

/// A spawned daemon speaking the protocol on its stdin/stdout. Its stderr
/// is collected; if the child dies, reads fail with an error carrying it.
/// The child is killed when this is dropped.
pub struct StdioTransport {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr_text: Arc<Mutex<Vec<u8>>>,
    stderr_task: Option<JoinHandle<()>>,
    grace: Option<Pin<Box<Sleep>>>,
    tick: Option<Pin<Box<Sleep>>>,
}

/// Spawns `command` (e.g. `nix-daemon --stdio`) with piped stdio.
pub fn spawn_stdio(mut command: Command) -> Result<StdioTransport, Error> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let spawn_err = |source| Error::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    let missing = || spawn_err(io::Error::other("child has no piped stdio"));
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let mut stderr = child.stderr.take().ok_or_else(missing)?;
    let stderr_text = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&stderr_text);
    let stderr_task = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf).await {
            tracing::debug!(stderr = %String::from_utf8_lossy(&buf[..n]).trim_end(), "daemon process");
            if let Ok(mut k) = keep.lock() {
                let room = STDERR_KEEP.saturating_sub(k.len());
                k.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    });
    Ok(StdioTransport {
        child,
        stdin,
        stdout,
        stderr_text,
        stderr_task: Some(stderr_task),
        grace: None,
        tick: None,
    })
}

impl StdioTransport {
    /// What the child wrote to stderr so far (at most 16 KiB).
    pub fn stderr_output(&self) -> String {
        self.stderr_text
            .lock()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default()
    }

    /// The child process, e.g. to wait for it.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Called at EOF on stdout or a broken stdin: waits (briefly) for
    /// stderr to close, then yields an error describing how the child ended.
    fn poll_death_error(&mut self, cx: &mut Context<'_>, kind: io::ErrorKind) -> Poll<io::Error> {
        let grace = self
            .grace
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(STDERR_GRACE)));
        let expired = grace.as_mut().poll(cx).is_ready();
        if let Some(task) = self.stderr_task.as_mut() {
            if Pin::new(task).poll(cx).is_pending() && !expired {
                return Poll::Pending;
            }
            self.stderr_task = None;
        }
        let status = match self.child.try_wait() {
            Ok(Some(s)) => s.to_string(),
            Ok(None) if !expired => {
                // Pipes closed but the child is not reaped yet: look again shortly.
                let tick = self
                    .tick
                    .insert(Box::pin(tokio::time::sleep(Duration::from_millis(5))));
                if tick.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                "still running".to_owned()
            }
            _ => "still running".to_owned(),
        };
        let text = self.stderr_output();
        Poll::Ready(io::Error::new(
            kind,
            format!(
                "the daemon process closed its end of the pipe ({status}); its stderr: {:?}",
                text.trim_end()
            ),
        ))
    }
}

impl AsyncRead for StdioTransport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stdout).poll_read(cx, buf))?;
        if buf.filled().len() == before && buf.remaining() > 0 {
            return self
                .poll_death_error(cx, io::ErrorKind::UnexpectedEof)
                .map(Err);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StdioTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match ready!(Pin::new(&mut self.stdin).poll_write(cx, buf)) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.poll_death_error(cx, e.kind()).map(Err)
            }
            res => Poll::Ready(res),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.stdin).poll_flush(cx)) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.poll_death_error(cx, e.kind()).map(Err)
            }
            res => Poll::Ready(res),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

/// A connection to the local daemon: its socket, or a spawned `nix-daemon --stdio`.
pub enum LocalTransport {
    /// The daemon socket.
    Socket(UnixStream),
    /// A spawned `nix-daemon --stdio`.
    Stdio(Box<StdioTransport>),
}

/// Connects to the local store: the daemon socket if it accepts
/// connections, else a spawned `nix-daemon --stdio` (single-user installs).
pub async fn connect_local() -> Result<LocalTransport, Error> {
    match connect_socket(None).await {
        Ok(s) => Ok(LocalTransport::Socket(s)),
        Err(Error::NoDaemon { socket, reason }) => {
            tracing::debug!(socket = %socket.display(), %reason, "no daemon socket, spawning nix-daemon --stdio");
            let mut cmd = Command::new("nix-daemon");
            cmd.arg("--stdio");
            match spawn_stdio(cmd) {
                Ok(t) => Ok(LocalTransport::Stdio(Box::new(t))),
                Err(Error::Spawn { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    Err(Error::NoDaemon { socket, reason })
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

impl AsyncRead for LocalTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalTransport::Socket(s) => Pin::new(s).poll_read(cx, buf),
            LocalTransport::Stdio(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LocalTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LocalTransport::Socket(s) => Pin::new(s).poll_write(cx, buf),
            LocalTransport::Stdio(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalTransport::Socket(s) => Pin::new(s).poll_flush(cx),
            LocalTransport::Stdio(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalTransport::Socket(s) => Pin::new(s).poll_shutdown(cx),
            LocalTransport::Stdio(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_say_what_to_do() {
        let denied = connect_error(
            DEFAULT_SOCKET.into(),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(denied.to_string().contains("group nix-users"), "{denied}");
        let refused = connect_error(
            DEFAULT_SOCKET.into(),
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert!(refused
            .to_string()
            .contains("no Nix daemon at /nix/var/nix/daemon-socket/socket"));
    }
}
