//! Helpers shared by the daemon integration tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use nix_wire::daemon::{
    spawn_stdio, topo_sort, ClientConfig, DaemonClient, PathInfo, ProtocolVersion, StdioTransport,
};
use nix_wire::{Sha256Hash, StorePath};
use test_support::{Peer, TempStore};

/// Client config advertising `1.minor`.
pub fn config(minor: u8) -> ClientConfig {
    ClientConfig {
        max_version: ProtocolVersion::new(1, minor),
        ..ClientConfig::default()
    }
}

/// A client of this machine's local store via `nix-daemon --stdio`.
pub async fn local_stdio(minor: u8) -> DaemonClient<StdioTransport> {
    let mut cmd = tokio::process::Command::new("nix-daemon");
    cmd.arg("--stdio");
    DaemonClient::connect(spawn_stdio(cmd).expect("spawn"), config(minor))
        .await
        .expect("handshake with local nix-daemon --stdio")
}

/// A client of `store` served by `peer`'s `nix-daemon --stdio --store`.
pub async fn store_client(
    store: &TempStore,
    peer: &Peer,
    minor: u8,
) -> DaemonClient<StdioTransport> {
    let t = spawn_stdio(store.daemon_command(peer)).expect("spawn");
    DaemonClient::connect(t, config(minor))
        .await
        .unwrap_or_else(|e| panic!("handshake with {} at 1.{minor}: {e}", peer.name))
}

/// The NAR of a regular file containing `hello\n` (reference §8.3).
pub fn hello_nar() -> Vec<u8> {
    let mut out = Vec::new();
    for tok in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"regular",
        b"contents",
        b"hello\n",
        b")",
    ] {
        out.extend_from_slice(&(tok.len() as u64).to_le_bytes());
        out.extend_from_slice(tok);
        out.resize(out.len().div_ceil(8) * 8, 0);
    }
    out
}

/// The content-addressed path `nix-store --add` makes of [`hello_nar`]'s file.
pub fn hello_info() -> PathInfo {
    let nar = hello_nar();
    PathInfo {
        path: StorePath::parse("/nix/store/g7lkiv5g5vdwr6vb5vpsmi573bs288bk-hello1").unwrap(),
        deriver: None,
        nar_hash: Sha256Hash::digest(&nar),
        references: BTreeSet::new(),
        registration_time: 0,
        nar_size: nar.len() as u64,
        ultimate: false,
        signatures: BTreeSet::new(),
        ca: Some("fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw".into()),
    }
}

/// The fixture closure used by the closure tests.
pub struct Closure {
    /// The root path.
    pub root: String,
    /// Every path, as `nix-store -qR` prints them.
    pub paths: BTreeSet<String>,
    /// Infos and NARs read from the local daemon, references first.
    pub nars: Vec<(PathInfo, Vec<u8>)>,
}

/// Builds the 301-path fixture closure once per test binary and reads all
/// its infos and NARs from the local daemon.
pub fn closure() -> &'static Closure {
    static C: OnceLock<Closure> = OnceLock::new();
    C.get_or_init(|| {
        std::thread::spawn(|| {
            let fx = test_support::fixture_closure(300, "a", 4);
            let rt = tokio::runtime::Runtime::new().unwrap();
            let nars = rt.block_on(async {
                let mut c = local_stdio(38).await;
                let mut out = Vec::new();
                for p in &fx.closure {
                    let p = StorePath::parse(p).unwrap();
                    let mut nar = Vec::new();
                    let info = c.nar_from_path(&p, &mut nar).await.expect("NarFromPath");
                    out.push((info, nar));
                }
                out
            });
            let by_path: std::collections::BTreeMap<_, _> = nars
                .into_iter()
                .map(|(i, n)| (i.path.clone(), (i, n)))
                .collect();
            let infos = by_path.values().map(|(i, _)| i.clone()).collect();
            let mut by_path = by_path;
            let nars = topo_sort(infos)
                .expect("acyclic")
                .into_iter()
                .map(|i| by_path.remove(&i.path).unwrap())
                .collect();
            Closure {
                root: fx.root,
                paths: fx.closure,
                nars,
            }
        })
        .join()
        .expect("fixture thread")
    })
}

/// Builds the bytes a fake daemon sends.
#[derive(Default, Clone)]
pub struct Script(pub Vec<u8>);

impl Script {
    /// Appends a u64.
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a padded string.
    pub fn str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(&(s.len() as u64).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self.0.resize(self.0.len().div_ceil(8) * 8, 0);
        self
    }

    /// Appends raw bytes.
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    /// STDERR_LAST.
    pub fn last(self) -> Self {
        self.u64(0x616c_7473)
    }

    /// A Nix 2.8 handshake (1.34, "2.8.0", LAST).
    pub fn handshake_2_8() -> Self {
        Self::default()
            .u64(0x6478_696f)
            .u64(0x122)
            .str("2.8.0")
            .last()
    }

    /// A Nix 2.3 handshake (1.21, LAST).
    pub fn handshake_2_3() -> Self {
        Self::default().u64(0x6478_696f).u64(0x115).last()
    }
}

/// A fake daemon: sends `script` (then EOF), and swallows what the client writes.
pub fn fake_daemon(script: Script) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, server) = tokio::io::duplex(1 << 16);
    let (mut rd, mut wr) = tokio::io::split(server);
    tokio::spawn(async move {
        let _ = wr.write_all(&script.0).await;
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(1..) = rd.read(&mut buf).await {}
    });
    client
}

/// A fake daemon that sends `script`, then stays connected and silent.
pub fn fake_daemon_then_silence(script: Script) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, server) = tokio::io::duplex(1 << 16);
    let (mut rd, mut wr) = tokio::io::split(server);
    tokio::spawn(async move {
        let _ = wr.write_all(&script.0).await;
        std::future::pending::<()>().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(1..) = rd.read(&mut buf).await {}
    });
    client
}

/// A client connected to a fake daemon answering with `script`.
pub async fn fake_client(
    script: Script,
) -> Result<DaemonClient<tokio::io::DuplexStream>, nix_wire::daemon::Error> {
    DaemonClient::connect(fake_daemon(script), ClientConfig::default()).await
}
