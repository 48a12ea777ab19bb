//! Fault injection: the real `deploy` of the repository's flake (both
//! cluster stages, against the recording stand-ins) to two nodes, Nix 2.26
//! and 2.8, SIGKILLed at seeded random points across the copy, the switch,
//! the stages and the confirmation; and a node's link cut in the middle of
//! a copy, or its sshd processes killed. After each fault, on every node: `nix-store --verify
//! --check-contents` passes, the profile is a complete generation (the
//! old one or the new one), the node's lock is free, and the rerun
//! completes. The seed is printed (`FAULT_SEED=N` replays a run,
//! `FAULT_RUNS=N` sets how many kills).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::fixture_closure_random;
use test_support::flake::{copy_fixture_nixpkgs, edit, fixture_nixpkgs};

use crate::common;

use common::{deploy, deploy_command, profile_target, repo_flake};

/// Short waits, so that each run is quick: the watchdog of a killed deploy
/// is still pending when the rerun supersedes it.
const FLAGS: &[&str] = &[
    "all",
    "--json",
    "--confirm-timeout",
    "20",
    "--k3s-timeout",
    "10",
];

/// A small deterministic generator (xorshift64*), so a seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, max)`.
    fn below(&mut self, max: u64) -> u64 {
        self.next() % max.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

/// Waits until nobody holds the node's deploy lock (a killed deployer's
/// channel closes when its connection does).
fn lock_is_free(node: &Node) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let free = node
            .run("flock -n /nix/var/nix-deploy/lock true")
            .unwrap()
            .status
            .success();
        if free || Instant::now() > deadline {
            return free;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What each node's profile points to after a complete deploy of
/// `nixpkgs`, and how many progress events the deploy printed.
fn deploy_fully(cluster: &Cluster, nixpkgs: &Path) -> (BTreeMap<String, String>, u64) {
    let out = deploy(cluster, &repo_flake(), nixpkgs, FLAGS);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .count() as u64;
    let profiles = cluster
        .nodes()
        .iter()
        .map(|n| (n.name().to_owned(), profile_target(n)))
        .collect();
    (profiles, events)
}

/// Starts the deploy of `nixpkgs` and kills it (SIGKILL) `delay` after it
/// printed its `nth` progress event (or once it exits); returns the last
/// event per node before the kill.
fn kill_during(
    cluster: &Cluster,
    nixpkgs: &Path,
    nth: u64,
    delay: Duration,
) -> BTreeMap<String, String> {
    let mut child = deploy_command(cluster, &[], &repo_flake(), nixpkgs, FLAGS)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut last = BTreeMap::new();
    let mut seen = 0;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let Ok(e) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let (Some(node), Some(event)) = (e["node"].as_str(), e["event"].as_str()) {
            last.insert(node.to_owned(), event.to_owned());
        }
        seen += 1;
        if seen == nth {
            break;
        }
    }
    std::thread::sleep(delay);
    let _ = child.kill();
    let _ = child.wait();
    last
}

#[test]
fn a_deployer_killed_anywhere_leaves_valid_nodes_and_the_rerun_completes() {
    let seed = seed();
    let runs: usize = std::env::var("FAULT_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    eprintln!("fault injection: seed {seed} ({runs} kills; FAULT_SEED={seed} replays)");
    let mut rng = Rng(seed);
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("main", NodeKind::Trixie)
            .node("worker", NodeKind::LocalNix),
    )
    .unwrap();
    let old = fixture_nixpkgs();
    let bumped = copy_fixture_nixpkgs();
    // New versions for both nodes' packages and for k3s: the stages
    // change too (the k3s units are rewritten and restarted).
    for (from, to) in [
        ("\"cowsay\": \"3.8.4\"", "\"cowsay\": \"3.8.5\""),
        ("\"htop\": \"3.4.1\"", "\"htop\": \"3.4.2\""),
        ("\"k3s\": \"1.35.6+k3s1\"", "\"k3s\": \"1.35.7+k3s1\""),
    ] {
        edit(&bumped.path().join("versions.json"), from, to);
    }
    let variants = [old.as_path(), bumped.path()];
    // Each variant once in full: what its profiles are, how many events
    // its deploy prints.
    let (second, events_second) = deploy_fully(&cluster, variants[1]);
    let (first, events_first) = deploy_fully(&cluster, variants[0]);
    let profiles = [first, second];
    let events = [events_first, events_second];
    let mut current = 0;
    let mut phases = Vec::new();
    for run in 0..runs {
        let target = 1 - current;
        // Kill points spread over the whole deploy: after a random event,
        // and a random moment before the next one is likely.
        let nth = 1 + rng.below(events[target]);
        let delay = Duration::from_millis(rng.below(40));
        let last = kill_during(&cluster, variants[target], nth, delay);
        for node in cluster.nodes() {
            let name = node.name();
            let at = format!("run {run}, killed {delay:?} after event {nth}, {name} at {last:?}");
            node.verify_store()
                .unwrap_or_else(|e| panic!("{at}: the store does not verify: {e}"));
            let now = profile_target(node);
            assert!(
                now == profiles[current][name] || now == profiles[target][name],
                "{at}: the profile points to {now:?}, neither generation"
            );
            assert!(lock_is_free(node), "{at}: the lock is still held");
        }
        phases.push(format!("event {nth} + {delay:?}: {last:?}"));
        let (done, _) = deploy_fully(&cluster, variants[target]);
        assert_eq!(done, profiles[target], "run {run}: the rerun");
        current = target;
    }
    eprintln!("fault injection: seed {seed}, where each kill landed:");
    for p in phases {
        eprintln!("  {p}");
    }
}

/// A node-side fault in the middle of a copy.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The node's link goes dead (packets dropped both ways).
    LinkCut,
    /// Every sshd process of the copy's connections is SIGKILLed (the
    /// listener stays).
    SshdKilled,
}

#[test]
fn a_link_cut_mid_copy_leaves_a_valid_store_and_the_rerun_completes() {
    interrupted_copy(Fault::LinkCut);
}

#[test]
fn sshd_killed_mid_copy_leaves_a_valid_store_and_the_rerun_completes() {
    interrupted_copy(Fault::SshdKilled);
}

/// Copies 200 random paths to a node over a 100 Mbit/s link, injects
/// `fault` after 60 paths started, and checks: the copy fails naming the
/// node, the store verifies, and the copy done again completes.
fn interrupted_copy(fault: Fault) {
    let fx = fixture_closure_random(200, &format!("fault-{fault:?}"), 256);
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];
    // Dead links are noticed after 3 unanswered keepalives a second apart.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ssh_config");
    let mut text = std::fs::read_to_string(cluster.ssh_config()).unwrap();
    text.push_str("\nHost *\n  ServerAliveInterval 1\n  ServerAliveCountMax 3\n");
    std::fs::write(&config, text).unwrap();
    let copy = |extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_deploy"));
        c.args(["copy", "--to", node.name(), "--no-agent", "--json"])
            .arg("--ssh-config")
            .arg(&config)
            .args(extra)
            .arg(&fx.root);
        c
    };
    node.shape(100).unwrap();
    let mut child = copy(&[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut started = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        started += usize::from(e["event"] == "pathStarted");
        if started == 60 {
            match fault {
                Fault::LinkCut => node.cut().unwrap(),
                Fault::SshdKilled => {
                    node.run_ok(
                        "for p in $(pgrep sshd); do \
                         grep -q listener /proc/$p/cmdline || kill -KILL $p; done",
                    )
                    .unwrap();
                }
            }
        }
    }
    let begun = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started >= 60, "the copy made progress before the cut");
    assert!(!out.status.success(), "{fault:?}: the copy fails");
    assert!(begun.elapsed() < Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&node.ip().to_string()), "{err}");
    if let Fault::LinkCut = fault {
        node.restore().unwrap();
    }
    node.unshape().unwrap();
    node.verify_store().unwrap();

    let out = copy(&[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.verify_store().unwrap();
    assert_eq!(node.store_closure(&fx.root).unwrap(), fx.closure);
}
