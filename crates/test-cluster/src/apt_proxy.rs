//! Letting a cluster's nodes reach the Debian mirror without routing them
//! anywhere (no NAT, no iptables): a small HTTP forward proxy for apt on the
//! host's address on the cluster's bridge, port [`PORT`], and in each
//! template node an `/etc/apt/apt.conf.d/00proxy` naming it. It forwards
//! only `GET` and `HEAD` to port 80 of the hosts the nodes' apt sources name
//! (the mirror `scripts/setup-test-machine` debootstrapped from), so a node
//! reaches nothing else. It runs on its own thread with its own runtime, lives
//! as long as the [`crate::Cluster`] and logs one line per request to
//! `apt-proxy.log` in the cluster's data directory.

mod http;

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::error::{io, Result};
use crate::rootfs::inside;
use http::{read_head, Refusal, Request};

/// The proxy's port (apt-cacher-ng's), on the host's address of the bridge;
/// any free one if it is taken.
pub(crate) const PORT: u16 = 3142;

/// The apt configuration file written into each node.
pub(crate) const APT_CONF: &str = "/etc/apt/apt.conf.d/00proxy";

/// How long connecting to the mirror may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A running proxy; dropping it stops it and closes its connections.
#[derive(Debug)]
pub(crate) struct AptProxy {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AptProxy {
    /// Starts a proxy on `ip`:[`PORT`] (or a free port) forwarding to `hosts`,
    /// logging to `log`.
    pub(crate) fn start(ip: Ipv4Addr, hosts: Vec<String>, log: &Path) -> Result<AptProxy> {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(format!("opening {}", log.display())))?;
        // Another proxy on all addresses (apt-cacher-ng) may hold the port.
        let listener = std::net::TcpListener::bind((ip, PORT))
            .or_else(|_| std::net::TcpListener::bind((ip, 0)))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(io(format!("listening on {ip} for the apt proxy")))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the apt proxy's address"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting the apt proxy's runtime"))?;
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener).map_err(io("registering the apt proxy's socket"))?
        };
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::new(Shared {
            hosts,
            log: Mutex::new(log_file),
        });
        let thread = std::thread::Builder::new()
            .name("apt-proxy".into())
            .spawn(move || {
                block_signals();
                runtime.block_on(async move {
                    tokio::select! {
                        () = accept(listener, shared) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(io("spawning the apt proxy's thread"))?;
        Ok(AptProxy {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where the proxy listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points apt in the node whose root is `root` at the proxy.
    pub(crate) fn configure(&self, root: &Path) -> Result<()> {
        let conf = inside(root, APT_CONF);
        let text = format!(
            "// The test cluster's apt proxy (crates/test-cluster).\n\
             Acquire::http::Proxy \"http://{}\";\n",
            self.addr
        );
        fs::write(&conf, text).map_err(io(format!("writing {}", conf.display())))
    }
}

impl Drop for AptProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The lowercase host names of the http:// URLs in the apt sources of the
/// node whose root is `root` (one-line `.list` and deb822 `.sources` files,
/// comments left out).
pub(crate) fn mirror_hosts(root: &Path) -> Vec<String> {
    let dir = inside(root, "/etc/apt/sources.list.d");
    let mut files = vec![inside(root, "/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir(&dir) {
        files.extend(entries.flatten().map(|e| e.path()));
    }
    let mut hosts: Vec<String> = files
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .map(|line| line.split('#').next().unwrap_or_default())
                .flat_map(str::split_whitespace)
                .filter_map(|word| {
                    let rest = word.strip_prefix("http://")?;
                    let authority = rest.split('/').next()?;
                    let host = authority.split(':').next()?;
                    (!host.is_empty()).then(|| host.to_ascii_lowercase())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// What every connection reads: the allowed hosts and the log.
struct Shared {
    hosts: Vec<String>,
    log: Mutex<fs::File>,
}

impl Shared {
    /// Appends a line to the log (a failing log is not worth failing apt for).
    fn log(&self, line: &str) {
        let mut file = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(file, "{line}");
    }
}

/// Serves connections until the task is dropped.
async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer, Arc::clone(&shared)));
            }
            Err(e) => {
                shared.log(&format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one client connection: its first request picks the origin server;
/// it and the following (pipelined) requests to the same server are sent
/// there in origin form while the responses stream back as they are. A
/// request for another server ends the connection once the responses sent
/// so far are through (apt then asks again on a new connection).
async fn connection(client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let (mut from_client, mut to_client) = client.into_split();
    let mut buf = Vec::new();
    let Ok(Some(head)) = read_head(&mut from_client, &mut buf).await else {
        return;
    };
    let first = match http::parse(&head, &shared.hosts) {
        Ok(r) => r,
        Err(refusal) => return refuse(&mut to_client, peer, &shared, &refusal).await,
    };
    shared.log(&format!("{peer} {}", first.line));
    let connect = TcpStream::connect((first.host.as_str(), 80));
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = format!("connecting to {}:80: {e}", first.host);
            let refusal = Refusal::new("502 Bad Gateway", reason);
            return refuse(&mut to_client, peer, &shared, &refusal).await;
        }
        Err(_) => {
            let reason = format!("connecting to {}:80 timed out", first.host);
            let refusal = Refusal::new("504 Gateway Timeout", reason);
            return refuse(&mut to_client, peer, &shared, &refusal).await;
        }
    };
    let (mut from_upstream, mut to_upstream) = upstream.into_split();
    let host = first.host.clone();
    let requests = async move {
        let mut next = Some(first);
        while let Some(Request { head, .. }) = next.take() {
            if to_upstream.write_all(&head).await.is_err() {
                break;
            }
            let Ok(Some(head)) = read_head(&mut from_client, &mut buf).await else {
                break;
            };
            next = http::parse(&head, &shared.hosts)
                .ok()
                .filter(|r| r.host == host);
            if let Some(r) = &next {
                shared.log(&format!("{peer} {}", r.line));
            }
        }
        let _ = to_upstream.shutdown().await;
    };
    let responses = async {
        let _ = tokio::io::copy(&mut from_upstream, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::pin!(responses);
    tokio::select! {
        () = &mut responses => {}
        () = requests => responses.await,
    }
}

/// Answers the client with `refusal` and logs it.
async fn refuse<W: AsyncWriteExt + Unpin>(
    to_client: &mut W,
    peer: SocketAddr,
    shared: &Shared,
    refusal: &Refusal,
) {
    shared.log(&format!(
        "{peer} refused: {} {}",
        refusal.status, refusal.reason
    ));
    let _ = to_client.write_all(&refusal.response()).await;
    let _ = to_client.shutdown().await;
}

/// Blocks every signal on the calling thread, so that process-directed ones
/// (SIGINT, SIGTERM...) go to the others: the `cluster` binary waits for them
/// on its main thread.
fn block_signals() {
    // SAFETY: sigset_t is plain data, filled before use; pthread_sigmask
    // changes the calling thread's mask alone.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_hosts_come_from_both_source_formats() {
        let root = std::env::temp_dir().join(format!("nd-apt-hosts-{}", std::process::id()));
        let dir = root.join("etc/apt/sources.list.d");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            root.join("etc/apt/sources.list"),
            "deb http://deb.debian.org/debian trixie main\n# deb http://old.example/x\n",
        )
        .unwrap();
        fs::write(
            dir.join("debian.sources"),
            "Types: deb\nURIs: http://Security.Debian.org:80/debian-security\n",
        )
        .unwrap();
        let hosts = mirror_hosts(&root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(hosts, ["deb.debian.org", "security.debian.org"]);
    }
}
