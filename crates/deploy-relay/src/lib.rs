//! The node side of fan-out. The deployer pushes the `nix-deploy-relay`
//! package into a node's store (a store path like any other) and runs it
//! over SSH to feed another node from this one, node to node, so that a
//! path crosses the deployer's uplink once. The conversation (JSON lines,
//! [`nix_deploy::fanout::protocol`]):
//!
//! 1. it makes an ed25519 key of its own, whose private half never leaves
//!    its memory, and tells the deployer the public half and the address
//!    it sends from;
//! 2. the deployer authorizes that key on the target for this deploy only
//!    (forced to the daemon command, from that address, expiring by itself);
//! 3. it connects to the target, accepting only the host keys the deployer
//!    verified, and copies the closures it is asked for from this node's
//!    store (read through the local daemon and the filesystem, as the
//!    deployer's own copy engine does) to the target's daemon, reporting
//!    progress as it goes.
//!
//! It exits as soon as its stdin closes: the deployer is done, or gone.
//! This crate owns the relay's command line and that loop; the copying is
//! `nix-deploy`'s copy engine.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use deploy_ssh::{Agent, ConfigFile, PrivateKey, PublicKey, SshOptions, SshSession, Target};
use nix_deploy::copy::{Compression, CopyEvent, CopyOptions, NodeStore, Substitute};
use nix_deploy::fanout::protocol::{self, Progress, RelayTarget, Reply, Request};
use nix_deploy::remote::SshConnector;
use nix_wire::daemon::{self, ClientConfig, DaemonClient};
use nix_wire::StorePath;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The longest request line read (a copy request names paths).
const MAX_LINE: usize = 64 << 20;

/// Serves one deployer on `input`/`output` until `input` ends.
pub async fn serve<R, W>(input: R, output: W) -> ExitCode
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (replies, mut outbox) = mpsc::unbounded_channel::<Reply>();
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(reply) = outbox.recv().await {
            let stop = matches!(reply, Reply::Failed { .. });
            if output
                .write_all(protocol::line(&reply).as_bytes())
                .await
                .is_err()
                || output.flush().await.is_err()
                || stop
            {
                break;
            }
        }
    });
    // Requests are read on their own, so that the end of stdin ends a copy
    // under way too (`gone`).
    let (requests, mut inbox) = mpsc::unbounded_channel::<Result<Request, String>>();
    let gone = CancellationToken::new();
    let reader = {
        let gone = gone.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(input);
            let mut line = String::new();
            loop {
                line.clear();
                match (&mut lines)
                    .take(MAX_LINE as u64)
                    .read_line(&mut line)
                    .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let request = serde_json::from_str::<Request>(&line)
                            .map_err(|e| format!("unreadable request: {e}"));
                        if requests.send(request).is_err() {
                            break;
                        }
                    }
                }
            }
            gone.cancel();
        })
    };
    let result = converse(&mut inbox, &replies, &gone).await;
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = replies.send(Reply::Failed { error });
            ExitCode::FAILURE
        }
    };
    drop(replies);
    let _ = writer.await;
    reader.abort();
    code
}

/// The conversation, request by request (those read before stdin ended
/// included); an error ends it, and the end of stdin ends a copy under way.
async fn converse(
    inbox: &mut mpsc::UnboundedReceiver<Result<Request, String>>,
    replies: &mpsc::UnboundedSender<Reply>,
    gone: &CancellationToken,
) -> Result<(), String> {
    let key = Arc::new(new_key()?);
    let public_key = key
        .public_key()
        .to_openssh()
        .map_err(|e| format!("encoding the relay's key: {e}"))?;
    let target = match inbox.recv().await {
        Some(Ok(Request::Target(t))) => t,
        Some(Ok(other)) => return Err(format!("expected the target first, got {other:?}")),
        Some(Err(e)) => return Err(e),
        None => return Ok(()),
    };
    let _ = replies.send(Reply::Ready {
        protocol: protocol::PROTOCOL,
        public_key: format!("{public_key} {}", protocol::KEY_COMMENT),
        source_address: source_address(&target.host, target.port),
    });
    match inbox.recv().await {
        Some(Ok(Request::Connect)) => {}
        Some(Ok(other)) => return Err(format!("expected connect, got {other:?}")),
        Some(Err(e)) => return Err(e),
        None => return Ok(()),
    }
    let mut store = connect(&target, key).await?;
    let _ = replies.send(Reply::Connected {
        node: store.node().to_owned(),
    });
    let mut local = DaemonClient::connect(
        daemon::connect_local()
            .await
            .map_err(|e| format!("this node's daemon: {e}"))?,
        ClientConfig::default(),
    )
    .await
    .map_err(|e| format!("this node's daemon: {e}"))?;
    while let Some(request) = inbox.recv().await {
        let paths = match request? {
            Request::Copy { paths } => paths,
            other => return Err(format!("expected a copy, got {other:?}")),
        };
        let roots = paths
            .iter()
            .map(|p| StorePath::parse(p).map_err(|e| format!("{p}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let (events, mut rx) = mpsc::unbounded_channel();
        let forward = async {
            while let Some(event) = rx.recv().await {
                let progress = match event {
                    CopyEvent::BytesSent { bytes } => Progress::BytesSent(bytes),
                    CopyEvent::PathsDone { paths } => {
                        Progress::PathsDone(paths.iter().map(StorePath::to_absolute).collect())
                    }
                    _ => continue,
                };
                let _ = replies.send(Reply::Progress(progress));
            }
        };
        // Fed paths come from this node: the target's caches are not asked.
        let options = CopyOptions {
            compression: Compression::Never,
            substitute_on_node: Substitute::Never,
            ..CopyOptions::default()
        };
        let never = CancellationToken::new();
        let copy = store.copy_closure(&mut local, &roots, &options, Some(events), &never);
        let (report, ()) = tokio::select! {
            done = async { tokio::join!(copy, forward) } => done,
            () = gone.cancelled() => return Ok(()),
        };
        let report = report.map_err(|e| e.to_string())?;
        let _ = replies.send(Reply::Copied {
            sent_paths: report.sent_paths,
            sent_bytes: report.sent_bytes,
        });
    }
    Ok(())
}

/// An ed25519 key from the kernel's random bytes.
fn new_key() -> Result<PrivateKey, String> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    let key = PrivateKey::from(deploy_ssh::Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    Ok(key)
}

/// The local address the kernel would send from to reach `host:port`
/// (a UDP socket's route; no packet is sent).
fn source_address(host: &str, port: u16) -> Option<String> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()?
        .next()?;
    let bind = match addr {
        std::net::SocketAddr::V4(_) => "0.0.0.0:0",
        std::net::SocketAddr::V6(_) => "[::]:0",
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(addr).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

/// Connects to the target's daemon with `key`, accepting only its given
/// host keys.
async fn connect(
    target: &RelayTarget,
    key: Arc<PrivateKey>,
) -> Result<NodeStore<SshConnector>, String> {
    let pinned = target
        .host_keys
        .iter()
        .map(|k| PublicKey::from_openssh(k).map_err(|e| format!("host key {k:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let options = SshOptions {
        config_file: ConfigFile::None,
        agent: Agent::Disabled,
        identity_keys: vec![key],
        pinned_host_keys: pinned,
        connect_timeout: Duration::from_secs(target.connect_timeout_secs.max(1)),
        ..SshOptions::default()
    };
    let mut ssh_target = Target::new(target.host.clone());
    ssh_target.port = Some(target.port);
    ssh_target.user = Some(target.user.clone());
    let session = SshSession::connect(&ssh_target, &options)
        .await
        .map_err(|e| e.to_string())?;
    NodeStore::open(SshConnector::new(Arc::new(session), target.command.clone()).without_probe())
        .await
        .map_err(|e| e.to_string())
}
