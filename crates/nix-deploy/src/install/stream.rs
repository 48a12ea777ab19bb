//! Store paths as one tar stream, for a node that has no Nix to receive
//! NARs but has `tar`. Each path is archived by our NAR encoder straight
//! from the local store and read back by our validating NAR reader, whose
//! events become tar entries under the path's base name: directories
//! 0555, files 0444 or 0555, owner root, mtime 1, as Nix's canonical
//! metadata. The NAR's hash and size are checked against the path info
//! that will be registered. Nothing is buffered beyond a few chunks: the
//! tar is written on the blocking pool into a small channel that the
//! caller drains into the node's `tar -x`.
//!
//! Names cannot escape: the NAR reader rejects empty, `.`, `..`, `/` and
//! NUL names and duplicates; the tar writer refuses `..` components too;
//! a symlink is always a leaf, so no entry is ever written through one.

use std::ffi::OsStr;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use nix_wire::daemon::PathInfo;
use nix_wire::nar::{Event, NarEncoder, NarError, NarReader, DEFAULT_CHUNK_SIZE};
use tar::{EntryType, Header};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Events, InstallEvent};

/// Chunks waiting between the tar writer and the node.
const CHANNEL_DEPTH: usize = 8;

/// Why streaming failed.
#[derive(Debug)]
pub(super) enum StreamError {
    /// Reading a path locally failed, or it does not match its info.
    Local(LocalError),
    /// Writing to the node failed (look at the remote command's stderr).
    Remote(io::Error),
}

/// A local failure while archiving one path.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The NAR could not be made or parsed.
    #[error("archiving {path} from the local store: {source}")]
    Nar {
        /// The store path.
        path: String,
        /// What failed.
        source: NarError,
    },
    /// The tar stream could not be written.
    #[error("writing the tar stream ({path}): {source}")]
    Tar {
        /// The store path.
        path: String,
        /// What failed.
        source: io::Error,
    },
    /// The path's contents do not hash to its registered NAR hash.
    #[error(
        "{path} in the local store does not match its registration (NAR sha256 {got}, \
         {got_size} bytes; registered {expected}, {expected_size} bytes): run \
         `nix-store --verify --check-contents --repair` on the deployer"
    )]
    Mismatch {
        /// The store path.
        path: String,
        /// The registered NAR hash (nix32).
        expected: String,
        /// The registered NAR size.
        expected_size: u64,
        /// The hash of what we read.
        got: String,
        /// The size of what we read.
        got_size: u64,
    },
    /// The blocking task died.
    #[error("the tar writer stopped: {0}")]
    Task(String),
}

/// Streams `infos`, read from `store_dir` (the local `/nix/store`), as a
/// tar archive into `out` (a node's `tar -x`), then shuts `out` down.
/// Returns the NAR bytes sent.
pub(super) async fn send_tar(
    infos: Vec<PathInfo>,
    store_dir: PathBuf,
    out: &mut (impl AsyncWrite + Unpin),
    events: &Events,
) -> Result<u64, StreamError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let task_events = events.clone();
    let writer =
        tokio::task::spawn_blocking(move || write_tar(&infos, &store_dir, tx, &task_events));
    let mut remote = Ok(());
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = out.write_all(&chunk).await {
            remote = Err(e);
            break;
        }
    }
    // Dropping the receiver makes a writer still running fail at once.
    drop(rx);
    let local = writer
        .await
        .map_err(|e| LocalError::Task(e.to_string()))
        .and_then(|r| r);
    remote.map_err(StreamError::Remote)?;
    let bytes = local.map_err(StreamError::Local)?;
    out.shutdown().await.map_err(StreamError::Remote)?;
    Ok(bytes)
}

/// Sends what it is given as chunks on a channel.
struct ChannelWriter(mpsc::Sender<Bytes>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the node stopped reading"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the whole archive of `infos`, read from `store_dir`; the NAR
/// bytes read.
fn write_tar(
    infos: &[PathInfo],
    store_dir: &Path,
    tx: mpsc::Sender<Bytes>,
    events: &Events,
) -> Result<u64, LocalError> {
    let out = BufWriter::with_capacity(DEFAULT_CHUNK_SIZE, ChannelWriter(tx));
    let mut tar = tar::Builder::new(out);
    let mut total = 0;
    for info in infos {
        let local = store_dir.join(info.path.base_name());
        let name = local.display().to_string();
        let nar_err = |source| LocalError::Nar {
            path: name.clone(),
            source,
        };
        let encoder = NarEncoder::new(&local).map_err(nar_err)?;
        let mut nar = NarReader::new(EncoderRead::new(encoder));
        append_nar(&mut tar, info.path.base_name(), &mut nar, &name)?;
        let stats = nar
            .stats()
            .ok_or_else(|| LocalError::Task(format!("{name}: the NAR reader ended early")))?;
        if stats.sha256 != info.nar_hash || stats.size != info.nar_size {
            return Err(LocalError::Mismatch {
                path: name,
                expected: info.nar_hash.to_nix32(),
                expected_size: info.nar_size,
                got: stats.sha256.to_nix32(),
                got_size: stats.size,
            });
        }
        total += stats.size;
        events.send(InstallEvent::PathSent {
            path: info.path.clone(),
            nar_size: stats.size,
        });
    }
    let tar_err = |source| LocalError::Tar {
        path: "end of archive".to_owned(),
        source,
    };
    tar.into_inner()
        .and_then(|mut out| out.flush())
        .map_err(tar_err)?;
    Ok(total)
}

/// Appends one NAR's nodes as tar entries under `root`.
fn append_nar<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    root: &str,
    nar: &mut NarReader<R>,
    store_path: &str,
) -> Result<(), LocalError> {
    let tar_err = |source| LocalError::Tar {
        path: store_path.to_owned(),
        source,
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    let child = |dirs: &[PathBuf], name: &[u8]| match dirs.last() {
        None => PathBuf::from(root),
        Some(dir) => dir.join(OsStr::from_bytes(name)),
    };
    loop {
        let event = nar.next().map_err(|source| LocalError::Nar {
            path: store_path.to_owned(),
            source,
        })?;
        match event {
            None => return Ok(()),
            Some(Event::Directory { name }) => {
                let path = child(&dirs, &name);
                let mut h = header(EntryType::Directory, 0o555, 0);
                tar.append_data(&mut h, &path, io::empty())
                    .map_err(tar_err)?;
                dirs.push(path);
            }
            Some(Event::EndDirectory) => {
                dirs.pop();
            }
            Some(Event::File {
                name,
                executable,
                size,
            }) => {
                let path = child(&dirs, &name);
                let mode = if executable { 0o555 } else { 0o444 };
                let mut h = header(EntryType::Regular, mode, size);
                tar.append_data(&mut h, &path, nar.contents())
                    .map_err(tar_err)?;
            }
            Some(Event::Symlink { name, target }) => {
                let path = child(&dirs, &name);
                let mut h = header(EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, &path, OsStr::from_bytes(&target))
                    .map_err(tar_err)?;
            }
        }
    }
}

/// A GNU tar header with Nix's canonical metadata.
fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h
}

/// A [`NarEncoder`]'s chunks as a [`Read`].
struct EncoderRead {
    encoder: NarEncoder,
    chunk: Bytes,
}

impl EncoderRead {
    fn new(encoder: NarEncoder) -> Self {
        Self {
            encoder,
            chunk: Bytes::new(),
        }
    }
}

impl Read for EncoderRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.encoder.next() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(io::Error::other(e.to_string())),
            }
        }
        let n = self.chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
