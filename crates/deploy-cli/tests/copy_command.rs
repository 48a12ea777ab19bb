//! `deploy copy` end to end against throwaway VPS nodes: JSON progress,
//! a client killed halfway, host key checks.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::fixture_closure;

fn deploy_copy(cluster: &Cluster, node: &Node, root: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
    c.args(["copy", "--to", node.name(), "--no-agent", "--json"])
        .arg("--ssh-config")
        .arg(cluster.ssh_config())
        .arg(root);
    c
}

fn node_closure(node: &Node, root: &str) -> BTreeSet<String> {
    node.store_closure(root).unwrap()
}

fn verify(node: &Node) {
    node.verify_store().unwrap();
}

fn events(stdout: &[u8]) -> Vec<Value> {
    stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn copy_prints_json_progress_and_a_rerun_sends_nothing() {
    let fx = fixture_closure(300, "cli-copy", 4);
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];
    let out = deploy_copy(&cluster, node, &fx.root).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out.stdout);
    assert_eq!(ev[0]["event"], "planned");
    assert_eq!(ev[0]["missingPaths"], 301);
    let started = ev.iter().filter(|e| e["event"] == "pathStarted").count();
    assert_eq!(started, 301);
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "done");
    assert_eq!(last["sentPaths"], 301);
    verify(node);
    assert_eq!(node_closure(node, &fx.root), fx.closure);

    let out = deploy_copy(&cluster, node, &fx.root).output().unwrap();
    assert!(out.status.success());
    let last = events(&out.stdout).pop().unwrap();
    assert_eq!(
        (last["sentPaths"].clone(), last["presentPaths"].clone()),
        (0.into(), 301.into())
    );
}

#[test]
fn a_client_killed_halfway_leaves_a_valid_store_and_the_rerun_completes() {
    let fx = fixture_closure(400, "cli-kill", 256);
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::LocalNix)).unwrap();
    let node = &cluster.nodes()[0];
    node.shape(100).unwrap();
    let mut child = deploy_copy(&cluster, node, &fx.root)
        .arg("--jobs=2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut done = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["event"] == "pathsDone" {
            done += e["paths"].as_u64().unwrap();
            if done >= 20 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(done >= 20, "the copy made progress before the kill");
    node.unshape().unwrap();
    verify(node);

    let out = deploy_copy(&cluster, node, &fx.root).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = events(&out.stdout).pop().unwrap();
    let present = last["presentPaths"].as_u64().unwrap();
    assert!(present >= done, "{last}");
    assert!(present < fx.closure.len() as u64, "{last}");
    verify(node);
    assert_eq!(node_closure(node, &fx.root), fx.closure);
}

#[test]
fn a_client_killed_mid_zstd_stream_leaves_valid_stores_and_the_rerun_completes() {
    let fx = fixture_closure(300, "cli-kill-zstd", 256);
    let receiver = test_support::receiver_package();
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("trixie", NodeKind::Trixie)
            .node("local", NodeKind::LocalNix),
    )
    .unwrap();
    for node in cluster.nodes() {
        node.shape(50).unwrap();
        let mut child = deploy_copy(&cluster, node, &fx.root)
            .args(["--compression", "yes", "--receiver", &receiver])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (mut done, mut zstd) = (0, false);
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
            zstd |= e["event"] == "compression" && e["method"] == "zstd";
            if e["event"] == "pathsDone" {
                done += e["paths"].as_u64().unwrap();
                if done >= 20 {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            zstd && done >= 20,
            "{}: zstd {zstd}, {done} paths",
            node.name()
        );
        node.unshape().unwrap();
        // The receivers and daemons see the end of their input and go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while node
            .run("pgrep -f '[n]ix-deploy-receive'")
            .unwrap()
            .status
            .success()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: a receiver outlived its sender",
                node.name()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        verify(node);

        let out = deploy_copy(&cluster, node, &fx.root)
            .args(["--compression", "yes", "--receiver", &receiver])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let last = events(&out.stdout).pop().unwrap();
        let present = last["presentPaths"].as_u64().unwrap();
        assert!(
            present >= done && present < fx.closure.len() as u64,
            "{last}"
        );
        verify(node);
        assert_eq!(node_closure(node, &fx.root), fx.closure);
    }
}

#[test]
fn unknown_host_keys_are_refused_unless_accept_new_is_given() {
    let fx = fixture_closure(2, "cli-hostkey", 1);
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let copy = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_deploy"))
            .args(["copy", "--no-agent", "--ssh-config", "none", "--to"])
            .arg(format!("ssh://root@{}:22", node.ip()))
            .arg("-i")
            .arg(cluster.client_key())
            .arg("--known-hosts")
            .arg(&known)
            .args(extra)
            .arg(&fx.root)
            .output()
            .unwrap()
    };
    let out = copy(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("host key") && err.contains("unknown"), "{err}");
    assert!(!known.exists() || std::fs::read_to_string(&known).unwrap().is_empty());

    let out = copy(&["--accept-new-host-keys"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(
        recorded.contains(node.host_public_key().split_whitespace().nth(1).unwrap()),
        "{recorded}"
    );
    // Now known: accepted without the flag.
    assert!(copy(&[]).status.success());

    // A changed key (another node's key under this address) is refused, flag or not.
    let other = cluster_key_line(node);
    std::fs::write(&known, other).unwrap();
    let out = copy(&["--accept-new-host-keys"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("changed") || err.contains("CHANGED"), "{err}");
}

/// A known_hosts line giving `node`'s address a key that is not its own.
fn cluster_key_line(node: &Node) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut parts = public.split_whitespace();
    format!(
        "{} {} {}\n",
        node.ip(),
        parts.next().unwrap(),
        parts.next().unwrap()
    )
}
