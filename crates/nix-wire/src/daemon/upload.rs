//! Uploads: AddToStoreNar (framed at ≥ 1.23, pulled with STDERR_READ at
//! 1.21–1.22) and AddMultipleToStore (≥ 1.32, else one AddToStoreNar per
//! path). While framed data goes up, the daemon's STDERR stream is read
//! concurrently so neither side can block on a full pipe (§3.3). The NAR
//! source's length is checked against narSize before its last byte is
//! sent, so a wrong-sized source aborts the upload instead of importing.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::wire::{self, FramedSink, WireError};

use super::client::DaemonClient;
use super::error::{Error, WireContext};
use super::opcode as op;
use super::path_info::PathInfo;
use super::stderr::{read_stderr, StderrEnd};

/// Chunk size for reading NAR sources.
const CHUNK: usize = 64 * 1024;

/// Why an upload stream stopped.
enum UploadFail {
    /// The caller's data was wrong; the stream was aborted cleanly.
    Local(Error),
    /// Writing to the daemon failed.
    Wire(WireError),
}

impl From<WireError> for UploadFail {
    fn from(e: WireError) -> Self {
        UploadFail::Wire(e)
    }
}

/// Reads the next piece of `info`'s NAR: `Ok(Some(n))` = `buf[..n]` may be
/// sent; `Ok(None)` = the NAR is complete. Before handing out the final
/// bytes it checks the source has nothing more.
async fn next_chunk<R: AsyncRead + Unpin + ?Sized>(
    nar: &mut R,
    info: &PathInfo,
    remaining: &mut u64,
    buf: &mut [u8],
) -> Result<Option<usize>, Error> {
    let source_err = |source| Error::NarSource {
        path: info.path.clone(),
        source,
    };
    if *remaining == 0 {
        return Ok(None);
    }
    let want = buf
        .len()
        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
    let n = nar.read(&mut buf[..want]).await.map_err(source_err)?;
    if n == 0 {
        return Err(Error::NarSizeMismatch {
            path: info.path.clone(),
            expected: info.nar_size,
            got: info.nar_size - *remaining,
            more: "",
        });
    }
    *remaining -= n as u64;
    if *remaining == 0 {
        let mut probe = [0u8; 1];
        if nar.read(&mut probe).await.map_err(source_err)? != 0 {
            return Err(Error::NarSizeMismatch {
                path: info.path.clone(),
                expected: info.nar_size,
                got: info.nar_size,
                more: "+",
            });
        }
    }
    Ok(Some(n))
}

/// Streams one NAR into a framed sink.
async fn send_nar<W, R>(
    sink: &mut FramedSink<'_, W>,
    info: &PathInfo,
    nar: &mut R,
    buf: &mut [u8],
) -> Result<(), UploadFail>
where
    W: AsyncWrite + Unpin + ?Sized,
    R: AsyncRead + Unpin + ?Sized,
{
    let mut remaining = info.nar_size;
    while let Some(n) = next_chunk(nar, info, &mut remaining, buf)
        .await
        .map_err(UploadFail::Local)?
    {
        sink.send(&buf[..n]).await?;
    }
    Ok(())
}

/// Ends a framed upload: terminator on success, early terminator (abort)
/// when the caller's data was wrong.
async fn close_sink<W: AsyncWrite + Unpin + ?Sized>(
    sink: FramedSink<'_, W>,
    res: Result<(), UploadFail>,
) -> Result<(), UploadFail> {
    match res {
        Ok(()) => Ok(sink.finish().await?),
        Err(UploadFail::Local(e)) => {
            sink.abort().await?;
            Err(UploadFail::Local(e))
        }
        Err(e) => Err(e),
    }
}

/// Runs a framed upload and the STDERR reader together. Returns the op's
/// result and whether the connection is still in sync.
async fn drive<U, T>(upload: U, stderr: T, op: &'static str) -> (Result<(), Error>, bool)
where
    U: std::future::Future<Output = Result<(), UploadFail>>,
    T: std::future::Future<Output = Result<StderrEnd, Error>>,
{
    tokio::pin!(upload, stderr);
    let mut up = None;
    let st = loop {
        tokio::select! {
            r = &mut upload, if up.is_none() => up = Some(r),
            r = &mut stderr => break r,
        }
    };
    let Some(up) = up else {
        // The daemon finished before taking all our data.
        return match st {
            Err(e) => (Err(e), false),
            Ok(_) => (
                Err(Error::protocol(
                    op,
                    "daemon ended the op before the upload finished",
                )),
                false,
            ),
        };
    };
    match (up, st) {
        (Ok(()), Ok(StderrEnd::Last)) => (Ok(()), true),
        (_, Ok(StderrEnd::Read(_))) => (
            Err(Error::protocol(
                op,
                "unexpected STDERR_READ during a framed upload",
            )),
            false,
        ),
        (Err(UploadFail::Local(e)), Ok(_) | Err(Error::Daemon { .. })) => (Err(e), true),
        (Ok(()), Err(e @ Error::Daemon { .. })) => (Err(e), true),
        (Err(UploadFail::Wire(_)), Err(e @ Error::Daemon { .. })) => (Err(e), false),
        (Err(UploadFail::Wire(source)), _) => (Err(Error::Wire { op, source }), false),
        (_, Err(e)) => (Err(e), false),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> DaemonClient<S> {
    /// AddToStoreNar: imports one path from its NAR (exactly `info.nar_size`
    /// bytes from `nar`). `dont_check_sigs` is honoured for trusted users
    /// only. References must already be valid on the daemon.
    ///
    /// `nar` must reach end-of-file right after `nar_size` bytes (for a pipe:
    /// drop its writer): the last bytes are only sent once that is checked,
    /// so a source of the wrong length yields [`Error::NarSizeMismatch`]
    /// and nothing is imported, the connection staying usable.
    pub async fn add_to_store_nar<R>(
        &mut self,
        info: &PathInfo,
        mut nar: R,
        repair: bool,
        dont_check_sigs: bool,
    ) -> Result<(), Error>
    where
        R: AsyncRead + Unpin + Send,
    {
        const OP: &str = "AddToStoreNar";
        self.begin()?;
        let res = async {
            wire::write_u64(&mut self.stream, op::ADD_TO_STORE_NAR)
                .await
                .during(OP)?;
            info.write_keyed(&mut self.stream).await.during(OP)?;
            wire::write_bool(&mut self.stream, repair)
                .await
                .during(OP)?;
            wire::write_bool(&mut self.stream, dont_check_sigs)
                .await
                .during(OP)?;
            if !self.version().at_least(23) {
                return self.upload_pulled(OP, info, &mut nar).await;
            }
            let (version, events) = (self.version(), self.events.clone());
            let (mut rd, mut wr) = tokio::io::split(&mut self.stream);
            let upload = async {
                let mut sink = FramedSink::new(&mut wr);
                let mut buf = vec![0u8; CHUNK];
                let res = send_nar(&mut sink, info, &mut nar, &mut buf).await;
                close_sink(sink, res).await
            };
            let (res, synced) = drive(
                upload,
                read_stderr(&mut rd, version, events.as_ref(), OP),
                OP,
            )
            .await;
            self.force_poison |= !synced;
            res
        }
        .await;
        tracing::debug!(path = %info.path, ok = res.is_ok(), "AddToStoreNar");
        self.end(res).await
    }

    /// The 1.21–1.22 transfer: the daemon pulls the NAR with STDERR_READ.
    async fn upload_pulled<R>(
        &mut self,
        op: &'static str,
        info: &PathInfo,
        nar: &mut R,
    ) -> Result<(), Error>
    where
        R: AsyncRead + Unpin + Send,
    {
        self.flush(op).await?;
        let mut remaining = info.nar_size;
        let mut local: Option<Error> = None;
        let mut buf = Vec::new();
        loop {
            let end =
                read_stderr(&mut self.stream, self.neg.version, self.events.as_ref(), op).await;
            let max = match end {
                Ok(StderrEnd::Last) => return local.map_or(Ok(()), Err),
                Err(e @ Error::Daemon { .. }) => return Err(local.unwrap_or(e)),
                Err(e) => return Err(e),
                Ok(StderrEnd::Read(max)) => max,
            };
            // An empty answer tells the daemon the data ended.
            let mut n = 0;
            if local.is_none() {
                buf.resize(usize::try_from(max).unwrap_or(CHUNK).clamp(1, CHUNK), 0);
                match next_chunk(nar, info, &mut remaining, &mut buf).await {
                    Ok(Some(len)) => n = len,
                    Ok(None) => {}
                    Err(e) => local = Some(e),
                }
            }
            wire::write_bytes(&mut self.stream, &buf[..n])
                .await
                .during(op)?;
            self.flush(op).await?;
        }
    }

    /// AddMultipleToStore: imports many paths in one framed stream, in the
    /// order given (references first, see [`super::topo_sort`]). Each NAR
    /// source is opened lazily as the iterator advances. Below protocol
    /// 1.32 this falls back to one AddToStoreNar per path.
    ///
    /// Against Nix 2.4–2.17 daemons (e.g. Debian's 2.8) a path that is
    /// already valid breaks the stream (Nix bug #6253): this is reported as
    /// [`Error::AlreadyValidRace`]; the paths before it were imported and the
    /// connection stays usable, so query the valid paths and retry the rest.
    pub async fn add_multiple_to_store<I, R>(
        &mut self,
        items: I,
        repair: bool,
        dont_check_sigs: bool,
    ) -> Result<(), Error>
    where
        I: IntoIterator<Item = (PathInfo, R)>,
        I::IntoIter: ExactSizeIterator,
        R: AsyncRead + Unpin + Send,
    {
        const OP: &str = "AddMultipleToStore";
        if !self.version().at_least(32) {
            for (info, nar) in items {
                self.add_to_store_nar(&info, nar, repair, dont_check_sigs)
                    .await?;
            }
            return Ok(());
        }
        self.begin()?;
        let items = items.into_iter();
        let count = items.len();
        let res = async {
            wire::write_u64(&mut self.stream, op::ADD_MULTIPLE_TO_STORE)
                .await
                .during(OP)?;
            wire::write_bool(&mut self.stream, repair)
                .await
                .during(OP)?;
            wire::write_bool(&mut self.stream, dont_check_sigs)
                .await
                .during(OP)?;
            let (version, events) = (self.version(), self.events.clone());
            let (mut rd, mut wr) = tokio::io::split(&mut self.stream);
            let upload = async {
                let mut sink = FramedSink::new(&mut wr);
                let res = send_all(&mut sink, items, count).await;
                close_sink(sink, res).await
            };
            let (res, synced) = drive(
                upload,
                read_stderr(&mut rd, version, events.as_ref(), OP),
                OP,
            )
            .await;
            self.force_poison |= !synced;
            res.map_err(|e| match e {
                Error::Daemon { error, .. }
                    if error
                        .message()
                        .contains("not an absolute path: 'nix-archive-1'") =>
                {
                    Error::AlreadyValidRace { error }
                }
                e => e,
            })
        }
        .await;
        tracing::debug!(count, ok = res.is_ok(), "AddMultipleToStore");
        self.end(res).await
    }
}

/// The AddMultipleToStore stream: count, then per path its ValidPathInfo
/// (1.16 layout) and NAR.
async fn send_all<W, I, R>(
    sink: &mut FramedSink<'_, W>,
    items: I,
    count: usize,
) -> Result<(), UploadFail>
where
    W: AsyncWrite + Unpin + ?Sized,
    I: Iterator<Item = (PathInfo, R)>,
    R: AsyncRead + Unpin + Send,
{
    sink.send(&(count as u64).to_le_bytes()).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut header = Vec::new();
    let mut sent = 0;
    for (info, mut nar) in items.take(count) {
        header.clear();
        info.write_keyed(&mut header).await?;
        sink.send(&header).await?;
        send_nar(sink, &info, &mut nar, &mut buf).await?;
        sent += 1;
    }
    if sent != count {
        return Err(UploadFail::Local(Error::InvalidRequest(format!(
            "the iterator promised {count} paths but yielded {sent}"
        ))));
    }
    Ok(())
}
