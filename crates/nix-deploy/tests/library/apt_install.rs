//! The `apt` method on a Debian 13 node without Nix (a `Bare` test node
//! reaching the Debian mirror through the cluster's apt proxy): Nix gets
//! installed, its daemon serves a copied closure over SSH, a second run does
//! nothing, a non-root user and an unreachable mirror get clear errors.
//! Needs this machine to reach the mirror of the node's apt sources: under CI
//! a missing mirror fails the test, elsewhere it is skipped with a message.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_ssh::{SshSession, Target, DEFAULT_DAEMON_COMMAND};
use nix_deploy::apt_install::{install_nix_with_apt, AptChange, AptInstallError, NIX_PACKAGE};
use nix_deploy::copy::{CopyOptions, NodeStore};
use nix_deploy::remote::SshConnector;
use nix_wire::daemon::{connect_local, ClientConfig, DaemonClient};
use nix_wire::StorePath;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::{fixture_closure, in_ci};
use tokio_util::sync::CancellationToken;

async fn session(cluster: &Cluster, target: &str) -> SshSession {
    SshSession::connect(&Target::parse(target).unwrap(), &cluster.ssh_options())
        .await
        .unwrap()
}

/// The first http:// host of the node's apt sources, if this machine
/// reaches it on port 80 (else why not).
fn mirror(node: &Node) -> Result<String, String> {
    let sources = node.run_ok("cat /etc/apt/sources.list").unwrap();
    let host = sources
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .and_then(|rest| rest.split(['/', ':']).next())
        .ok_or_else(|| format!("no http:// mirror in the node's sources: {sources:?}"))?
        .to_owned();
    let addrs: Vec<_> = (host.as_str(), 80)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| TcpStream::connect_timeout(a, Duration::from_secs(5)).is_ok())
        .map(|_| host.clone())
        .ok_or_else(|| format!("this machine does not reach {host}:80 ({addrs:?})"))
}

/// Pushes a small fixture closure through the node's `nix-daemon --stdio`.
async fn copy_fixture(session: SshSession, node: &Node) {
    let fx = fixture_closure(20, "apt-install", 1);
    let root = StorePath::parse(&fx.root).unwrap();
    let connector = SshConnector::new(Arc::new(session), DEFAULT_DAEMON_COMMAND);
    let mut store = NodeStore::open(connector).await.unwrap();
    let mut local = DaemonClient::connect(connect_local().await.unwrap(), ClientConfig::default())
        .await
        .unwrap();
    let report = store
        .copy_closure(
            &mut local,
            std::slice::from_ref(&root),
            &CopyOptions::default(),
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(report.sent_paths, fx.closure.len());
    node.verify_store().unwrap();
    assert_eq!(node.store_closure(&fx.root).unwrap(), fx.closure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apt_installs_nix_on_a_bare_debian_node_once() {
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("bare", NodeKind::Bare)
            .node("offline", NodeKind::Bare)
            .with_apt_mirror(),
    )
    .unwrap();
    let node = cluster.node("bare").unwrap();
    if let Err(why) = mirror(node) {
        let msg = format!("the apt install test needs the Debian mirror: {why}");
        assert!(!in_ci(), "{msg}");
        eprintln!("skipping: {msg}");
        return;
    }

    let err = install_nix_with_apt(&session(&cluster, "deploy@bare").await)
        .await
        .unwrap_err();
    assert!(matches!(err, AptInstallError::NotRoot { .. }), "{err}");
    assert!(err.to_string().contains("connect as root"), "{err}");

    let s = session(&cluster, "bare").await;
    let started = Instant::now();
    let first = install_nix_with_apt(&s).await.unwrap();
    eprintln!("apt installed Nix in {:.1?}: {first:?}", started.elapsed());
    assert_eq!(first.change, AptChange::Installed(vec![NIX_PACKAGE.into()]));
    assert!(!first.systemd, "the test node runs no systemd");
    assert!(!first.daemon_socket);
    let version = node.run_ok("nix-store --version").unwrap();
    assert!(version.trim().ends_with(&first.nix_version), "{version}");
    let over_ssh = s.run("nix-store --version").await.unwrap();
    assert!(over_ssh.status.success());
    assert_eq!(String::from_utf8_lossy(&over_ssh.stdout), version);

    let started = Instant::now();
    let again = install_nix_with_apt(&s).await.unwrap();
    assert_eq!(again.change, AptChange::AlreadyInstalled);
    assert_eq!(again.nix_version, first.nix_version);
    eprintln!("second run: {:.1?}", started.elapsed());

    copy_fixture(s, node).await;

    // A mirror that cannot be reached (a closed port; no retries, which take
    // seconds): apt's own words, naming the node.
    let offline = cluster.node("offline").unwrap();
    let refused = format!("http://{}:1", offline.host_ip());
    offline
        .run_ok(&format!(
            "printf 'Acquire::http::Proxy \"{refused}\";\\nAcquire::Retries \"0\";\\n' \
             >/etc/apt/apt.conf.d/00proxy"
        ))
        .unwrap();
    let err = install_nix_with_apt(&session(&cluster, "offline").await)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AptInstallError::Apt { .. }), "{text}");
    assert!(text.contains("apt-get update"), "{text}");
    assert!(text.contains(&offline.ip().to_string()), "{text}");
    assert!(text.contains(&format!("{}:1", offline.host_ip())), "{text}");
}
