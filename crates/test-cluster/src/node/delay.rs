//! [`DelayRelay`]: a round-trip delay in front of a node's sshd, since this
//! kernel has no netem. The relay listens on the node's address, port 22,
//! inside the node's network namespace (sshd then listens on the node's
//! loopback only) and forwards every connection to the sshd, holding each
//! chunk for half the round trip in each direction. Clients see the same
//! address and host key as without it, and `tc tbf` on the veth still
//! shapes the bytes (they cross the veth before and after the relay).
//!
//! Each direction of a connection is a reader thread, stamping chunks with
//! the time they may leave, and a writer thread sending them then; a
//! direction holds at most [`QUEUE_LIMIT`] bytes, far more than any
//! bandwidth-delay product the tests use, so the relay delays without
//! capping the rate.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{io, ClusterError, Result};

/// Bytes one direction may hold back.
pub(crate) const QUEUE_LIMIT: usize = 128 << 20;

/// Read size per chunk.
const CHUNK: usize = 64 * 1024;

/// A running relay; dropping it stops it and cuts its connections.
#[derive(Debug)]
pub(crate) struct DelayRelay {
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<thread::JoinHandle<()>>,
    rtt: Duration,
}

impl DelayRelay {
    /// Listens on `listen` in network namespace `netns` and forwards to
    /// `upstream` (in the same namespace), `rtt / 2` each way.
    pub(crate) fn start(
        netns: &str,
        listen: SocketAddr,
        upstream: SocketAddr,
        rtt: Duration,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns_path = format!("/run/netns/{netns}");
        let accept = {
            let (stop, streams) = (stop.clone(), streams.clone());
            thread::Builder::new()
                .name(format!("delay-{netns}"))
                .spawn(move || {
                    // This thread (and the sockets it makes) live in the
                    // node's namespace from here on.
                    let listener = enter_netns(&ns_path).and_then(|()| bind(listen));
                    let listener = match listener {
                        Ok(l) => {
                            let _ = ready_tx.send(Ok(()));
                            l
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    accept_loop(&listener, upstream, rtt / 2, &stop, &streams);
                })
                .map_err(io(format!("starting the delay relay of {netns}")))?
        };
        let relay = Self {
            stop,
            streams,
            accept: Some(accept),
            rtt,
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(relay),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClusterError::Node {
                node: netns.to_owned(),
                detail: "the delay relay's thread died".into(),
            }),
        }
    }

    /// The round trip it adds.
    pub(crate) fn rtt(&self) -> Duration {
        self.rtt
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in lock(&self.streams).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn enter_netns(path: &str) -> Result<()> {
    let file = std::fs::File::open(path).map_err(io(format!("opening {path}")))?;
    // SAFETY: setns on a valid namespace fd changes only this thread's
    // network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io(format!("entering {path}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).map_err(io(format!("binding {addr}")))?;
    listener
        .set_nonblocking(true)
        .map_err(io(format!("making {addr} non-blocking")))?;
    Ok(listener)
}

fn accept_loop(
    listener: &TcpListener,
    upstream: SocketAddr,
    one_way: Duration,
    stop: &AtomicBool,
    streams: &Mutex<Vec<TcpStream>>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                // Made here, in the node's namespace.
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                if relay(client, server, one_way, streams).is_err() {
                    continue;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Starts both directions of one connection.
fn relay(
    client: TcpStream,
    server: TcpStream,
    one_way: Duration,
    streams: &Mutex<Vec<TcpStream>>,
) -> std::io::Result<()> {
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        lock(streams).push(s.try_clone()?);
    }
    direction(client.try_clone()?, server.try_clone()?, one_way)?;
    direction(server, client, one_way)
}

/// A chunk on its way and the time it may leave; `None` is the end.
type Due = (Instant, Option<Vec<u8>>);

/// Chunks on their way, and their bytes.
struct Queue {
    items: Mutex<(VecDeque<Due>, usize)>,
    changed: Condvar,
}

/// Copies `from` to `to`, each chunk `delay` late.
fn direction(mut from: TcpStream, mut to: TcpStream, delay: Duration) -> std::io::Result<()> {
    let queue = Arc::new(Queue {
        items: Mutex::new((VecDeque::new(), 0)),
        changed: Condvar::new(),
    });
    let q = queue.clone();
    thread::Builder::new().spawn(move || loop {
        let mut buf = vec![0u8; CHUNK];
        let chunk = match from.read(&mut buf) {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
        };
        let end = chunk.is_none();
        let mut items = lock(&q.items);
        while items.1 > QUEUE_LIMIT {
            items = q.changed.wait(items).unwrap_or_else(|p| p.into_inner());
        }
        items.1 += chunk.as_ref().map_or(0, Vec::len);
        items.0.push_back((Instant::now() + delay, chunk));
        drop(items);
        q.changed.notify_all();
        if end {
            return;
        }
    })?;
    thread::Builder::new().spawn(move || loop {
        let (due, chunk) = {
            let mut items = lock(&queue.items);
            loop {
                if let Some(front) = items.0.pop_front() {
                    items.1 -= front.1.as_ref().map_or(0, Vec::len);
                    break front;
                }
                items = queue.changed.wait(items).unwrap_or_else(|p| p.into_inner());
            }
        };
        queue.changed.notify_all();
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        match chunk {
            Some(data) if to.write_all(&data).is_ok() => {}
            _ => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    })?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
