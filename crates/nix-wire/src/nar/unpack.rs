//! Safe NAR unpacker: materialises a validated NAR as a new directory tree.
//!
//! Nothing is ever written outside the destination. Entry names are
//! validated by the decoder (no `/`, `.`, `..`, NUL, duplicates), every entry
//! is created relative to a handle on its parent directory (`mkdirat`,
//! `openat`, `symlinkat`), creation never follows or replaces anything that
//! already exists (`O_CREAT|O_EXCL`, `O_NOFOLLOW`), and symlinks are created
//! but never traversed.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::{Event, NarError, NarReader, NarStats};

/// Mode of executable files and directories.
const MODE_EXEC: u32 = 0o755;
/// Mode of other files.
const MODE_FILE: u32 = 0o644;

/// An open directory being filled, and its path for error messages.
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Unpacks the NAR read from `r` to `dest`, which must not exist (its parent
/// must). `r` must hold exactly one NAR: trailing bytes are an error.
/// Returns the NAR's size and SHA-256.
///
/// Files get mode 0755 if executable, else 0644, and directories 0755,
/// whatever the umask; making them read-only (0555/0444) and resetting
/// timestamps is the store's canonicalisation, not done here. One file
/// descriptor is held per open directory level (at most
/// [`MAX_DEPTH`](super::decode::MAX_DEPTH)). On error, the partial tree is
/// left for the caller to remove.
pub fn unpack(r: impl Read, dest: &Path) -> Result<NarStats, NarError> {
    let mut nar = NarReader::new(BufReader::with_capacity(256 * 1024, r));
    let mut dirs: Vec<Dir> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    while let Some(event) = nar.next()? {
        match event {
            Event::Directory { name } => {
                let path = child_path(&dirs, dest, &name);
                let fd = match dirs.last() {
                    None => fs::create_dir(dest).and_then(|()| open_dir(rustix::fs::CWD, dest)),
                    Some(parent) => {
                        rustix::fs::mkdirat(&parent.fd, &name, Mode::from_raw_mode(MODE_EXEC))
                            .map_err(std::io::Error::from)
                            .and_then(|()| open_dir(&parent.fd, &name))
                    }
                }
                .map_err(NarError::fs(&path))?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(MODE_EXEC))
                    .map_err(|e| NarError::fs(&path)(e.into()))?;
                dirs.push(Dir { fd, path });
            }
            Event::EndDirectory => {
                dirs.pop();
            }
            Event::File {
                name, executable, ..
            } => {
                let path = child_path(&dirs, dest, &name);
                let mode = if executable { MODE_EXEC } else { MODE_FILE };
                let mut file =
                    create_file(dirs.last(), dest, &name, mode).map_err(NarError::fs(&path))?;
                loop {
                    let n = nar.read_contents(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n]).map_err(NarError::fs(&path))?;
                }
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                    .map_err(|e| NarError::fs(&path)(e.into()))?;
            }
            Event::Symlink { name, target } => {
                let path = child_path(&dirs, dest, &name);
                let res = match dirs.last() {
                    None => std::os::unix::fs::symlink(OsStr::from_bytes(&target), dest),
                    Some(parent) => rustix::fs::symlinkat(&target, &parent.fd, &name)
                        .map_err(std::io::Error::from),
                };
                res.map_err(NarError::fs(&path))?;
            }
        }
    }
    let stats = nar.stats().ok_or(NarError::Truncated {
        offset: nar.offset(),
    })?;
    let mut byte = [0u8; 1];
    match nar.into_inner().read(&mut byte) {
        Ok(0) => Ok(stats),
        Ok(_) => Err(NarError::TrailingData { offset: stats.size }),
        Err(source) => Err(NarError::Read {
            offset: stats.size,
            source,
        }),
    }
}

fn child_path(dirs: &[Dir], dest: &Path, name: &[u8]) -> PathBuf {
    match dirs.last() {
        None => dest.to_path_buf(),
        Some(parent) => parent.path.join(OsStr::from_bytes(name)),
    }
}

fn open_dir(at: impl std::os::fd::AsFd, path: impl rustix::path::Arg) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(at, path, flags, Mode::empty())?)
}

/// Creates a new file, failing if anything (even a dangling symlink) exists.
fn create_file(parent: Option<&Dir>, dest: &Path, name: &[u8], mode: u32) -> std::io::Result<File> {
    match parent {
        None => fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(dest),
        Some(parent) => {
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(&parent.fd, name, flags, Mode::from_raw_mode(mode))?;
            Ok(File::from(fd))
        }
    }
}
