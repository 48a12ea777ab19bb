//! `connect_local`: falls back to `nix-daemon --stdio` when no daemon
//! listens, and honours `NIX_DAEMON_SOCKET_PATH`. One test function, since
//! it changes the environment.

use crate::common;

use nix_wire::daemon::{connect_local, DaemonClient, LocalTransport};
use test_support::SocketDaemon;

#[tokio::test]
async fn connect_local_prefers_the_socket_and_falls_back_to_stdio() {
    // No daemon at this path: spawn nix-daemon --stdio (single-user install).
    std::env::set_var("NIX_DAEMON_SOCKET_PATH", "/tmp/no-daemon-here/socket");
    let t = connect_local().await.unwrap();
    assert!(matches!(t, LocalTransport::Stdio(_)));
    let mut c = DaemonClient::connect(t, common::config(38)).await.unwrap();
    assert_eq!(c.nix_version(), Some("2.8.0"));
    let p = nix_wire::StorePath::parse("/nix/store/00000000000000000000000000000000-nope").unwrap();
    assert!(!c.is_valid_path(&p).await.unwrap());

    // A daemon listening: use its socket.
    let daemon = SocketDaemon::start();
    std::env::set_var("NIX_DAEMON_SOCKET_PATH", daemon.socket());
    let t = connect_local().await.unwrap();
    assert!(matches!(t, LocalTransport::Socket(_)));
    let mut c = DaemonClient::connect(t, common::config(38)).await.unwrap();
    assert!(!c.is_valid_path(&p).await.unwrap());
    std::env::remove_var("NIX_DAEMON_SOCKET_PATH");
}
