//! The apt proxy of [`ClusterSpec::with_apt_mirror`], without the internet:
//! the node's apt is pointed at it, it refuses hosts outside the node's apt
//! sources and methods apt does not use, and it goes with the cluster.
//! (Fetching from the mirror is tested by nix-deploy's `apt_install` test.)

use std::process::Command;

use test_cluster::{Cluster, ClusterSpec, NodeKind};

/// The status line the proxy answers `request` with, asked from inside the node.
fn ask(node: &test_cluster::Node, proxy: std::net::SocketAddr, request: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; printf '{request}\\r\\n\\r\\n' >&3; head -n 1 <&3",
        proxy.ip(),
        proxy.port()
    );
    let out = node
        .command("/bin/bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_proxy_serves_template_nodes_only_for_their_mirror_and_goes_with_the_cluster() {
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("bare", NodeKind::Bare)
            .node("local", NodeKind::LocalNix)
            .with_apt_mirror(),
    )
    .unwrap();
    let proxy = cluster.apt_proxy().expect("a template node gets a proxy");
    let [bare, local] = cluster.nodes() else {
        panic!("2 nodes expected")
    };
    assert_eq!(proxy.ip(), bare.host_ip());
    let conf = bare.run_ok("cat /etc/apt/apt.conf.d/00proxy").unwrap();
    assert!(
        conf.contains(&format!("Acquire::http::Proxy \"http://{proxy}\";")),
        "{conf}"
    );
    // A local-Nix node shares the host's dpkg database: no proxy for it.
    assert!(!local.root().join("etc/apt/apt.conf.d/00proxy").exists());

    assert_eq!(
        ask(bare, proxy, "GET http://example.org/ HTTP/1.1"),
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        ask(bare, proxy, "CONNECT deb.debian.org:443 HTTP/1.1"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    let log = std::fs::read_to_string(
        test_cluster::DATA_ROOT.to_owned() + "/" + cluster.id() + "/apt-proxy.log",
    )
    .unwrap();
    assert!(log.contains("refused: 403 Forbidden example.org"), "{log}");

    assert!(listening(proxy));
    drop(cluster);
    assert!(!listening(proxy), "the proxy still listens on {proxy}");
}

/// Whether a socket of this machine listens on `addr` (`ss`, so that nothing
/// is sent to an address that may no longer be on this machine).
fn listening(addr: std::net::SocketAddr) -> bool {
    let out = Command::new("ss")
        .args(["-Hltn", "src", &addr.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "ss: {out:?}");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}
