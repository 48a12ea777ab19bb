//! What the CLI's end-to-end tests share: running `deploy` against a test
//! cluster whose nodes `main` and `worker` stand in for the inventory's
//! control plane and worker.

#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::flake::nix_args;
use test_support::repo_root;

/// The inventory's control plane.
pub const MAIN: &str = "k8s-cluster-main";
/// The inventory's worker.
pub const WORKER: &str = "k8s-cluster-node-1";
/// Where the inventory puts the profile.
pub const PROFILE: &str = "/nix/var/nix/profiles/nix-deploy";

/// Two nodes standing in for the inventory's two: the control plane on
/// Debian 13's Nix 2.26, the worker on Nix 2.8.
pub fn cluster() -> Cluster {
    Cluster::start(
        &ClusterSpec::new()
            .node("main", NodeKind::Trixie)
            .node("worker", NodeKind::LocalNix),
    )
    .unwrap()
}

/// `deploy` on `flake` (a directory) with nixpkgs from `nixpkgs`, aimed at
/// the cluster's nodes.
pub fn deploy(cluster: &Cluster, flake: &str, nixpkgs: &Path, args: &[&str]) -> Output {
    deploy_sub(cluster, &[], flake, nixpkgs, args)
}

/// `deploy SUBCOMMAND...` with the flags of [`deploy`].
pub fn deploy_sub(
    cluster: &Cluster,
    sub: &[&str],
    flake: &str,
    nixpkgs: &Path,
    args: &[&str],
) -> Output {
    deploy_command(cluster, sub, flake, nixpkgs, args)
        .output()
        .unwrap()
}

/// The command [`deploy_sub`] runs, to start it some other way.
pub fn deploy_command(
    cluster: &Cluster,
    sub: &[&str],
    flake: &str,
    nixpkgs: &Path,
    args: &[&str],
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
    c.args(sub);
    common_args(&mut c, cluster, flake, nixpkgs);
    c.args(args);
    c
}

/// [`deploy_sub`] with the flags of [`deploy`] before the subcommand, as
/// global options: `deploy --flake F ... SUBCOMMAND ARGS`.
pub fn deploy_options_first(
    cluster: &Cluster,
    sub: &[&str],
    flake: &str,
    nixpkgs: &Path,
    args: &[&str],
) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
    common_args(&mut c, cluster, flake, nixpkgs);
    c.args(sub).args(args).output().unwrap()
}

/// The flake, nixpkgs, SSH and target flags of every test's `deploy`.
fn common_args(c: &mut Command, cluster: &Cluster, flake: &str, nixpkgs: &Path) {
    flake_and_targets(
        c,
        cluster,
        flake,
        nixpkgs,
        &[(MAIN, "main"), (WORKER, "worker")],
    );
}

/// `--flake`, nixpkgs, the SSH flags, and `--target NAME=root@IP` for each
/// inventory node `NAME` played by the cluster's node `node`.
pub fn flake_and_targets(
    c: &mut Command,
    cluster: &Cluster,
    flake: &str,
    nixpkgs: &Path,
    targets: &[(&str, &str)],
) {
    c.arg("--flake").arg(flake).args(nix_args(nixpkgs));
    c.args([
        "--no-agent",
        "--ssh-config",
        "none",
        "--connect-timeout",
        "3",
    ]);
    c.arg("-i").arg(cluster.client_key());
    c.arg("--known-hosts").arg(cluster.known_hosts());
    for (name, node) in targets {
        let ip = cluster.node(node).unwrap().ip();
        c.arg("--target").arg(format!("{name}=root@{ip}"));
    }
}

pub fn repo_flake() -> String {
    repo_root().display().to_string()
}

pub fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_else(|| {
        panic!(
            "no output; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(last).unwrap()
}

/// Where the node's deploy profile points, or "" without one.
pub fn profile_target(node: &Node) -> String {
    node.run_ok(&format!(
        "if [ -e {PROFILE} ]; then readlink -f {PROFILE}; fi"
    ))
    .unwrap()
    .trim()
    .to_owned()
}
