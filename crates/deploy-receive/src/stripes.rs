//! One stream carried by several SSH channels ("stripes"), so that it is
//! not held to one channel's window per round trip (OpenSSH's sshd gives a
//! channel 2 MiB: 25 MiB/s at 80 ms).
//!
//! The sender cuts the stream into chunks, each a little-endian `u32`
//! length and that many bytes, and sends chunk *i* on stripe *i mod N*.
//! Stripe 0 is the lead receiver's stdin. Each other stripe is the stdin of
//! a `nix-deploy-receive join NAME K` on its own channel, which connects to
//! the lead through a Unix socket in a directory only the SSH user can
//! enter (`${TMPDIR:-/tmp}/nix-deploy-receive-NAME`, made by the lead with
//! mode 0700; a joiner checks it is its own before connecting), says which
//! stripe it is, and copies its stdin there. The lead reads the chunks back
//! in turn ([`StripedReader`]).

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The largest chunk a sender may send (it bounds what a stripe's reader
/// holds; senders use far less).
pub const CHUNK_MAX: usize = 1 << 20;

/// The most stripes a stream may have.
pub const STRIPES_MAX: usize = 16;

/// How long the lead waits for a stripe to join, and a joiner for the lead.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The rendezvous directory for `name` (16 to 64 lowercase hex digits,
/// chosen by the sender): `${TMPDIR:-/tmp}/nix-deploy-receive-NAME`.
pub fn rendezvous_dir(name: &str) -> io::Result<PathBuf> {
    let ok = (16..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("rendezvous name {name:?}: 16 to 64 lowercase hex digits"),
        ));
    }
    let tmp = std::env::var_os("TMPDIR")
        .filter(|t| !t.is_empty())
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    Ok(tmp.join(format!("nix-deploy-receive-{name}")))
}

/// The lead's end of a rendezvous: its directory and listening socket,
/// removed when dropped.
pub struct Rendezvous {
    dir: PathBuf,
    listener: UnixListener,
}

impl Rendezvous {
    /// Makes the directory (mode 0700; an existing one is an error) and
    /// listens on its socket.
    pub fn create(name: &str) -> io::Result<Self> {
        let dir = rendezvous_dir(name)?;
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        match UnixListener::bind(dir.join("socket")) {
            Ok(listener) => Ok(Self { dir, listener }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// The reader of a stream of `stripes` stripes whose stripe 0 is
    /// `first`: the others are accepted as they join, each within
    /// [`JOIN_TIMEOUT`] of being needed.
    pub fn reader<R: Read>(self, first: R, stripes: usize) -> io::Result<StripedReader<R>> {
        let listener = self.listener.try_clone()?;
        let (tx, rx) = mpsc::channel();
        let others = stripes.saturating_sub(1);
        // Accepting blocks; a joiner that never comes leaves this thread
        // waiting until the process ends (the reader times out first).
        std::thread::spawn(move || {
            for _ in 0..others {
                let joined = listener.accept().and_then(|(s, _)| hello(s));
                if tx.send(joined).is_err() {
                    return;
                }
            }
        });
        Ok(StripedReader {
            first,
            others: (0..others).map(|_| None).collect(),
            incoming: rx,
            turn: 0,
            left: 0,
            rendezvous: Some(self),
        })
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("socket"));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Reads a joiner's `stripe K` line, byte by byte (its data follows
/// right behind).
fn hello(mut stream: UnixStream) -> io::Result<(usize, UnixStream)> {
    stream.set_read_timeout(Some(JOIN_TIMEOUT))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 32 {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let k = std::str::from_utf8(&line)
        .ok()
        .and_then(|l| l.strip_prefix("stripe "))
        .and_then(|k| k.parse::<usize>().ok())
        .filter(|k| (1..STRIPES_MAX).contains(k))
        .ok_or_else(|| invalid(format!("a joiner said {line:?}, not `stripe K`")))?;
    stream.set_read_timeout(None)?;
    Ok((k, stream))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads a striped stream back in order: chunk *i* from stripe *i mod N*.
/// Ends (reads 0) when the stripe whose turn it is ends between chunks.
pub struct StripedReader<R> {
    first: R,
    others: Vec<Option<UnixStream>>,
    incoming: mpsc::Receiver<io::Result<(usize, UnixStream)>>,
    turn: usize,
    /// Bytes left in the current chunk.
    left: usize,
    /// Removed once every stripe joined.
    rendezvous: Option<Rendezvous>,
}

impl<R: Read> StripedReader<R> {
    /// A reader of one stripe, `first` (no rendezvous).
    pub fn single(first: R) -> Self {
        let (_, rx) = mpsc::channel();
        Self {
            first,
            others: Vec::new(),
            incoming: rx,
            turn: 0,
            left: 0,
            rendezvous: None,
        }
    }

    /// The stripe whose turn it is, waiting for it to join if need be.
    fn stripe(&mut self) -> io::Result<&mut dyn Read> {
        if self.turn == 0 {
            return Ok(&mut self.first);
        }
        let deadline = Instant::now() + JOIN_TIMEOUT;
        while self.others[self.turn - 1].is_none() {
            let wait = deadline.saturating_duration_since(Instant::now());
            let (k, stream) = match self.incoming.recv_timeout(wait) {
                Ok(joined) => joined?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("stripe {} did not join within {JOIN_TIMEOUT:?}", self.turn),
                    ))
                }
            };
            let stripes = self.others.len() + 1;
            let slot = self
                .others
                .get_mut(k - 1)
                .ok_or_else(|| invalid(format!("stripe {k} of only {stripes}")))?;
            if slot.is_some() {
                return Err(invalid(format!("stripe {k} joined twice")));
            }
            *slot = Some(stream);
            if self.others.iter().all(Option::is_some) {
                // Everyone is here: nobody needs the socket any more.
                self.rendezvous = None;
            }
        }
        match &mut self.others[self.turn - 1] {
            Some(s) => Ok(s),
            None => Err(invalid("a stripe went missing".to_owned())),
        }
    }
}

impl<R: Read> Read for StripedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut header = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                match self.stripe()?.read(&mut header[got..]) {
                    Ok(0) if got == 0 => return Ok(0),
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let len = u32::from_le_bytes(header) as usize;
            if len == 0 || len > CHUNK_MAX {
                return Err(invalid(format!("a chunk of {len} bytes")));
            }
            self.left = len;
        }
        let want = self.left.min(buf.len());
        let n = loop {
            match self.stripe()?.read(&mut buf[..want]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.left -= n;
        if self.left == 0 {
            self.turn = (self.turn + 1) % (self.others.len() + 1);
        }
        Ok(n)
    }
}

/// A joiner: connects to the lead of rendezvous `name` as stripe `k`
/// (waiting up to [`JOIN_TIMEOUT`] for it to listen) and copies `input`
/// there until it ends.
pub fn join(name: &str, k: usize, mut input: impl Read) -> io::Result<u64> {
    let dir = rendezvous_dir(name)?;
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut stream = loop {
        match connect(&dir) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    stream.write_all(format!("stripe {k}\n").as_bytes())?;
    // Not `io::copy`: on Linux it splices from the stdin pipe into the
    // socket, and a splice waiting for room in the socket holds the pipe's
    // lock, so sshd's (non-blocking) write of the next data into that pipe
    // blocks too, and with it every channel of the connection, including
    // the one the lead is waiting on.
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stream.write_all(&buf[..n])?;
        copied += n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    Ok(copied)
}

/// Connects to `dir`'s socket if `dir` is ours and private.
fn connect(dir: &std::path::Path) -> io::Result<UnixStream> {
    let meta = std::fs::symlink_metadata(dir)?;
    let me = std::fs::metadata("/proc/self")?.uid();
    if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a private directory of ours", dir.display()),
        ));
    }
    UnixStream::connect(dir.join("socket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `data` cut into chunks of `size`, dealt to `n` stripes.
    fn deal(data: &[u8], size: usize, n: usize) -> Vec<Vec<u8>> {
        let mut stripes = vec![Vec::new(); n];
        for (i, chunk) in data.chunks(size).enumerate() {
            let s = &mut stripes[i % n];
            s.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            s.extend_from_slice(chunk);
        }
        stripes
    }

    fn name() -> String {
        format!("{:016x}{:08x}", std::process::id(), rand_ish())
    }

    fn rand_ish() -> u32 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    }

    #[test]
    fn one_stripe_reads_back_its_chunks() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let stripes = deal(&data, 777, 1);
        let mut out = Vec::new();
        StripedReader::single(&stripes[0][..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn three_stripes_joining_late_and_out_of_order_read_back_in_order() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let stripes = deal(&data, 4096, 3);
        let name = name();
        let lead = Rendezvous::create(&name).unwrap();
        let mut reader = lead.reader(&stripes[0][..], 3).unwrap();
        let joiners: Vec<_> = [2usize, 1]
            .into_iter()
            .map(|k| {
                let (name, part) = (name.clone(), stripes[k].clone());
                std::thread::spawn(move || join(&name, k, &part[..]).unwrap())
            })
            .collect();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        for j in joiners {
            j.join().unwrap();
        }
        drop(reader);
        assert!(
            !rendezvous_dir(&name).unwrap().exists(),
            "removed at the end"
        );
    }

    #[test]
    fn bad_chunks_and_names_are_refused() {
        let mut r = StripedReader::single(&[0u8, 0, 0, 0][..]);
        assert!(r.read(&mut [0u8; 8]).is_err(), "an empty chunk");
        let huge = ((CHUNK_MAX + 1) as u32).to_le_bytes();
        assert!(StripedReader::single(&huge[..])
            .read(&mut [0u8; 8])
            .is_err());
        let cut = [5u8, 0, 0, 0, 1, 2];
        let mut out = Vec::new();
        assert!(StripedReader::single(&cut[..])
            .read_to_end(&mut out)
            .is_err());
        for bad in ["../x", "ABCDEF0123456789", "0123", "0123456789abcdef/"] {
            assert!(rendezvous_dir(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_joiner_refuses_a_directory_others_can_enter() {
        let name = name();
        let dir = rendezvous_dir(&name).unwrap();
        std::fs::DirBuilder::new().mode(0o777).create(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = connect(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        std::fs::remove_dir(&dir).unwrap();
    }
}
