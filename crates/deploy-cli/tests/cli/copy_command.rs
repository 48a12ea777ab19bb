//! `deploy copy` end to end against throwaway VPS nodes: JSON progress,
//! a client killed halfway, host key checks.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::{fixture_closure, fixture_closure_random};

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

/// Runs `copy` until it has started sending `paths` paths, then kills it
/// (SIGKILL); returns the paths started and the events seen. (A batch's
/// paths are only confirmed at its end, and a chain of paths goes as one
/// batch, so the paths started are what shows progress mid-stream.)
fn kill_after(copy: &mut Command, paths: usize) -> (usize, Vec<Value>) {
    let mut child = copy
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut started, mut seen) = (0, Vec::new());
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        started += usize::from(e["event"] == "pathStarted");
        seen.push(e);
        if started >= paths {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    (started, seen)
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
    // 38 MiB that no compressor shrinks: 3 s at 100 Mbit/s.
    let fx = fixture_closure_random(300, "cli-kill", 128);
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::LocalNix)).unwrap();
    let node = &cluster.nodes()[0];
    node.shape(100).unwrap();
    let mut copy = deploy_copy(&cluster, node, &fx.root);
    let (started, _) = kill_after(copy.arg("--jobs=2"), 120);
    assert!(started >= 120, "the copy made progress before the kill");
    node.unshape().unwrap();
    verify(node);

    let out = deploy_copy(&cluster, node, &fx.root).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = events(&out.stdout).pop().unwrap();
    // What fully arrived before the kill stayed; the rest was sent again.
    let present = last["presentPaths"].as_u64().unwrap();
    assert!(present >= 20, "{last}");
    assert!(present < fx.closure.len() as u64, "{last}");
    verify(node);
    assert_eq!(node_closure(node, &fx.root), fx.closure);
}

#[test]
fn a_client_killed_mid_zstd_stream_leaves_valid_stores_and_the_rerun_completes() {
    // 25 MiB that zstd can't shrink: 4 s at 50 Mbit/s.
    let fx = fixture_closure_random(200, "cli-kill-zstd", 128);
    let receiver = test_support::receiver_package();
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("trixie", NodeKind::Trixie)
            .node("local", NodeKind::LocalNix),
    )
    .unwrap();
    for node in cluster.nodes() {
        node.shape(50).unwrap();
        let mut copy = deploy_copy(&cluster, node, &fx.root);
        let (started, seen) = kill_after(
            copy.args(["--compression", "yes", "--receiver", &receiver]),
            80,
        );
        let zstd = seen
            .iter()
            .any(|e| e["event"] == "compression" && e["method"] == "zstd");
        assert!(
            zstd && started >= 80,
            "{}: zstd {zstd}, {started} paths started",
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
        assert!(present >= 20 && present < fx.closure.len() as u64, "{last}");
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
