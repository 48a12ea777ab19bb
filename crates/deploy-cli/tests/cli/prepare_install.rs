//! `deploy prepare` on nodes without Nix: the inventory's `closure` method
//! installs it (building the flake's Nix package first), a deploy follows,
//! and a second prepare changes nothing; `--nix-install apt` installs
//! Debian's nix-bin through the node's apt.

use crate::common;

use std::process::Output;

use common::{deploy_sub, repo_flake, MAIN, WORKER};
use serde_json::Value;
use test_cluster::{Cluster, ClusterSpec, NodeKind};
use test_support::flake::fixture_nixpkgs;

/// `deploy ARGS...` on the repository's flake (fixture nixpkgs), both
/// inventory nodes aimed at the cluster's bare nodes.
fn deploy(cluster: &Cluster, sub: &[&str], args: &[&str]) -> Output {
    deploy_sub(cluster, sub, &repo_flake(), &fixture_nixpkgs(), args)
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
            .node("worker", NodeKind::Bare)
            .with_apt_mirror(),
    )
    .unwrap();

    let out = deploy(&cluster, &["prepare"], &["--json", MAIN]);
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

    let out = deploy(&cluster, &[], &[MAIN, "--goal", "switch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let again = node_json(&deploy(&cluster, &["prepare"], &["--json", MAIN]));
    assert_eq!(again["changed"], false);
    assert_eq!(again["installed"], Value::Null);

    // The apt method: Debian's nix-bin, once.
    let apt = ["--json", "--nix-install", "apt", WORKER];
    let first = node_json(&deploy(&cluster, &["prepare"], &apt));
    assert_eq!(first["installed"]["method"], "apt", "{first}");
    assert_eq!(first["installed"]["packages"][0], "nix-bin", "{first}");
    assert!(
        first["nixVersion"].as_str().unwrap_or("").starts_with("2."),
        "{first}"
    );
    assert_eq!(first["changed"], true);
    let again = node_json(&deploy(&cluster, &["prepare"], &apt));
    assert_eq!(again["changed"], false, "{again}");
}

#[test]
fn deploy_installs_nix_before_the_first_transfer_to_a_bare_node() {
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("main", NodeKind::Bare)
            .node("worker", NodeKind::Bare),
    )
    .unwrap();
    let main = cluster.node("main").unwrap();
    let out = deploy(&cluster, &[], &["-v", MAIN, "--goal", "switch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{MAIN}: no Nix: installing it")),
        "{err}"
    );
    assert!(main
        .run_ok("nix-store --version")
        .unwrap()
        .contains("2.8.0"));
    assert!(main
        .run_ok("readlink /nix/var/nix/profiles/nix-deploy")
        .unwrap()
        .starts_with("nix-deploy-1-link"));
    // Now it has Nix: a rerun installs nothing.
    let out = deploy(&cluster, &[], &["-v", MAIN, "--goal", "switch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("installing it"),
        "{err}"
    );
    // The install wrote the inventory's nix.conf settings too, so prepare
    // finds nothing to do.
    assert!(main
        .run_ok("cat /etc/nix/nix.conf")
        .unwrap()
        .contains("extra-experimental-features = nix-command flakes\n"));
    let again = node_json(&deploy(&cluster, &["prepare"], &["--json", MAIN]));
    assert_eq!(again["installed"], Value::Null, "{again}");
    assert_eq!(again["trusted"], true, "{again}");
    assert_eq!(again["changed"], false, "{again}");
}
