//! `deploy prepare` on nodes without Nix: the inventory's `closure` method
//! installs it (building the flake's Nix package first), a deploy follows,
//! and a second prepare changes nothing; `--nix-install apt` says it is not
//! implemented.

use std::process::{Command, Output};

use serde_json::Value;
use test_cluster::{Cluster, ClusterSpec, NodeKind};
use test_support::flake::{fixture_nixpkgs, nix_args};
use test_support::repo_root;

const MAIN: &str = "k8s-cluster-main";
const WORKER: &str = "k8s-cluster-node-1";

/// `deploy ARGS...` on the repository's flake (fixture nixpkgs), both
/// inventory nodes aimed at the cluster's bare nodes.
fn deploy(cluster: &Cluster, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
    c.args(args)
        .arg("--flake")
        .arg(repo_root())
        .args(nix_args(&fixture_nixpkgs()));
    c.args(["--no-agent", "--ssh-config", "none"]);
    c.arg("-i").arg(cluster.client_key());
    c.arg("--known-hosts").arg(cluster.known_hosts());
    for (name, node) in [(MAIN, "main"), (WORKER, "worker")] {
        let ip = cluster.node(node).unwrap().ip();
        c.arg("--target").arg(format!("{name}=root@{ip}"));
    }
    c.output().unwrap()
}

/// The one node object of `deploy prepare --json`'s output.
fn node_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let all: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    all["nodes"][0].clone()
}

#[test]
fn prepare_installs_nix_on_a_bare_node_once_and_a_deploy_follows() {
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("main", NodeKind::Bare)
            .node("worker", NodeKind::Bare),
    )
    .unwrap();

    let out = deploy(&cluster, &["prepare", "--json", MAIN]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = node_json(&out);
    assert_eq!(first["nixVersion"], "2.8.0");
    assert_eq!(first["changed"], true);
    assert_eq!(first["installed"]["sentPaths"], 2);
    assert_eq!(first["installed"]["service"], "NoSystemd");

    let out = deploy(&cluster, &[MAIN, "--goal", "switch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let again = node_json(&deploy(&cluster, &["prepare", "--json", MAIN]));
    assert_eq!(again["changed"], false);
    assert_eq!(again["installed"], Value::Null);

    let out = deploy(&cluster, &["prepare", "--nix-install", "apt", WORKER]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`apt` install method is not implemented"),
        "{err}"
    );
}
