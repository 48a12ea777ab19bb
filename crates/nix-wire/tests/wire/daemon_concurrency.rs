//! The deadlock of reference §3.3: a daemon that writes a lot of log output
//! before it reads the uploaded data. Over a small in-memory pipe this only
//! completes if the client reads STDERR while it uploads.

use crate::common;

use std::time::Duration;

use common::Script;
use nix_wire::daemon::{DaemonClient, DaemonEvent, PathInfo};
use nix_wire::wire::FramedSource;
use nix_wire::{Sha256Hash, StorePath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn big_info(nar: &[u8]) -> PathInfo {
    PathInfo {
        path: StorePath::parse("/nix/store/g7lkiv5g5vdwr6vb5vpsmi573bs288bk-big").unwrap(),
        deriver: None,
        nar_hash: Sha256Hash::digest(nar),
        references: Default::default(),
        registration_time: 0,
        nar_size: nar.len() as u64,
        ultimate: false,
        signatures: Default::default(),
        ca: None,
    }
}

#[tokio::test]
async fn upload_and_log_flood_do_not_deadlock() {
    let nar: Vec<u8> = (0..2 << 20).map(|i| (i % 251) as u8).collect();
    let info = big_info(&nar);
    // Exactly what the client sends before the framed data.
    let request = Script::default()
        .u64(39)
        .str(&info.path.to_string())
        .str("")
        .str(&info.nar_hash.to_hex())
        .u64(0)
        .u64(0)
        .u64(info.nar_size)
        .u64(0)
        .u64(0)
        .str("")
        .u64(0)
        .u64(1)
        .0;
    let (client, mut server) = tokio::io::duplex(4096);
    let expected = nar.clone();
    let daemon = tokio::spawn(async move {
        server.write_all(&Script::handshake_2_8().0).await.unwrap();
        let mut hello = [0u8; 32];
        server.read_exact(&mut hello).await.unwrap();
        let mut req = vec![0u8; request.len()];
        server.read_exact(&mut req).await.unwrap();
        assert_eq!(req, request);
        // 1 MiB of log lines before reading any frame.
        let line = "x".repeat(4000);
        for _ in 0..256 {
            server
                .write_all(&Script::default().u64(0x6f6c_6d67).str(&line).0)
                .await
                .unwrap();
        }
        let got = FramedSource::new(&mut server)
            .read_to_end(64 << 20)
            .await
            .unwrap();
        assert_eq!(got, expected);
        server.write_all(&Script::default().last().0).await.unwrap();
        server
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = nix_wire::daemon::ClientConfig {
        events: Some(tx),
        ..Default::default()
    };
    let upload = async {
        let mut c = DaemonClient::connect(client, config).await.unwrap();
        c.add_to_store_nar(&info, &nar[..], false, true)
            .await
            .unwrap();
    };
    tokio::time::timeout(Duration::from_secs(20), upload)
        .await
        .expect("deadlock: upload did not finish");
    daemon.await.unwrap();
    let mut logs = 0;
    while let Ok(DaemonEvent::Log(_)) = rx.try_recv() {
        logs += 1;
    }
    assert_eq!(logs, 256);
}
