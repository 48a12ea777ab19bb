//! Fan-out (issue 14): the cold `deploy all --goal switch` (the real
//! binary, run in a network namespace of its own whose link to the
//! cluster's bridge is shaped both ways: the deployer's uplink; the nodes'
//! own network unshaped) of N fresh nodes, against the cold deploy of one node, with
//! fan-out and without it (`--fan-out off`: a copy to each node). Every
//! node's profile is the real closure of `tests/fixtures/real-closure.nix`
//! plus a small part of its own.
//!
//! Usage: `fanout [--runs N] [--nodes 3,5] [--links 100,20] [--shape S]
//! [--modes fan-out,off,cache] [--salt S] [--rtt MS]`. `--rtt` adds that
//! round trip between the deployer and every node (a delaying relay per
//! node in the deployer's namespace; the nodes' `peerAddress` keeps their
//! own network undelayed). Mode `cache` deploys through a
//! binary cache (`cluster.cache`: nginx on the host's bridge address, on
//! the nodes' side of the uplink; `deploy prepare` first, untimed).
//!
//! Prints per link and node count the median wall-clock time, the bytes
//! through the uplink, the ratio to one node's deploy (the target:
//! at most 1.4), the uplink bytes against one closure, and the CPU time of
//! the deployer and the nodes against what the machine's cores could give
//! in that time (near 100 %: the run was bound by this machine's CPU). Every node's store
//! is verified (`--check-contents`) and its profile checked. Needs root,
//! `scripts/setup-test-machine` and `cargo build --release -p deploy-cli
//! -p deploy-relay -p deploy-receive`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use benches::{deploy_binary, measure, median, Closure};
use test_cluster::{CacheServer, Cluster, ClusterSpec, NodeKind};
use test_support::flake::{copy_flake, fixture_nixpkgs, flake_ref, nix_args};

struct Args {
    runs: usize,
    nodes: Vec<usize>,
    links: Vec<u32>,
    shape: String,
    modes: Vec<String>,
    salt: String,
    rtt: Duration,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match parse(&argv).and_then(|a| bench(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        runs: 1,
        nodes: vec![3, 5],
        links: vec![100, 20],
        shape: "wide".into(),
        modes: vec!["fan-out".into(), "off".into()],
        salt: "fanout".into(),
        rtt: Duration::ZERO,
    };
    let list = |v: &str| -> Vec<String> { v.split(',').map(str::to_owned).collect() };
    let nums = |v: &str| -> Result<Vec<u64>, String> {
        v.split(',')
            .map(|n| n.parse().map_err(|e| format!("{n}: {e}")))
            .collect()
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => a.runs = value.parse().map_err(|e| format!("--runs: {e}"))?,
            "--nodes" => a.nodes = nums(value)?.into_iter().map(|n| n as usize).collect(),
            "--links" => a.links = nums(value)?.into_iter().map(|n| n as u32).collect(),
            "--shape" => a.shape = value.clone(),
            "--modes" => a.modes = list(value),
            "--salt" => a.salt = value.clone(),
            "--rtt" => {
                a.rtt = Duration::from_millis(value.parse().map_err(|e| format!("--rtt: {e}"))?)
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// One timed deploy.
struct Sample {
    wall: Duration,
    uplink: u64,
    /// CPU of the deployer and of every node's services.
    cpu: Duration,
    /// The deployer's part of it.
    cpu_deployer: Duration,
}

fn bench(a: &Args) -> Result<(), String> {
    let closure = benches::real_closure(&a.salt, &a.shape)?;
    let receiver = test_support::receiver_package();
    let relay = test_support::relay_package();
    println!(
        "closure {} ({}): {} paths, NAR {:.0} MiB; round trip to the nodes +{} ms",
        closure.root,
        a.shape,
        closure.paths.len(),
        mib(closure.nar_bytes),
        a.rtt.as_millis()
    );
    let mut summary = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for &mbit in &a.links {
        let mut samples: BTreeMap<(usize, String), Vec<Sample>> = BTreeMap::new();
        for run in 0..a.runs {
            let mut cases = vec![(1, "one node".to_owned())];
            for &n in &a.nodes {
                cases.extend(a.modes.iter().map(|m| (n, m.clone())));
            }
            for (n, mode) in cases {
                let s = deploy(n, mbit, &mode, a.rtt, &receiver, &relay, &closure)?;
                println!(
                    "{mbit} Mbit/s run {} {n} node(s) {mode:<8} {:>8.2}s  uplink {:>7.1} MiB  CPU {:>6.1}s (deployer {:.1}s; {:.0} % of {cores} cores)",
                    run + 1,
                    s.wall.as_secs_f64(),
                    mib(s.uplink),
                    s.cpu.as_secs_f64(),
                    s.cpu_deployer.as_secs_f64(),
                    100.0 * s.cpu.as_secs_f64() / (cores as f64 * s.wall.as_secs_f64())
                );
                samples.entry((n, mode)).or_default().push(s);
            }
        }
        let med = |k: &(usize, String)| {
            let s = &samples[k];
            let wall = median(s.iter().map(|s| s.wall));
            let uplink = median(s.iter().map(|s| Duration::from_nanos(s.uplink))).as_nanos();
            let busy =
                median(s.iter().map(|s| s.cpu)).as_secs_f64() / (cores as f64 * wall.as_secs_f64());
            (wall, uplink as u64, busy)
        };
        let (one, one_uplink, _) = med(&(1, "one node".to_owned()));
        println!(
            "\n== {mbit} Mbit/s: one node {:.2}s, uplink {:.1} MiB ==",
            one.as_secs_f64(),
            mib(one_uplink)
        );
        for &n in &a.nodes {
            for mode in &a.modes {
                let (wall, uplink, busy) = med(&(n, mode.clone()));
                let line = format!(
                    "{mbit} Mbit/s, {n} nodes, {mode}: {:.2}s = {:.2}x one node (target <= 1.4 with fan-out); uplink {:.1} MiB = {:.2}x one node's; CPU {:.0} % of the cores",
                    wall.as_secs_f64(),
                    wall.as_secs_f64() / one.as_secs_f64(),
                    mib(uplink),
                    uplink as f64 / one_uplink.max(1) as f64,
                    100.0 * busy
                );
                println!("{line}");
                summary.push(line);
            }
        }
    }
    println!("\n== summary ==");
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

/// A flake of the user's (through `lib.mkDeploy`) with a node `nodeI` for
/// each of `peers` (its `peerAddress`, if given), each with the closure
/// plus a file of its own as its profile, and the binary cache `cache` if
/// given.
fn user_flake(
    closure: &Closure,
    peers: &[Option<String>],
    cache: Option<&str>,
) -> Result<tempfile::TempDir, String> {
    let this = copy_flake();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut packages = String::new();
    let mut inventory = String::new();
    for (i, peer) in (1..).zip(peers) {
        let role = if i == 1 { "server" } else { "agent" };
        packages += &format!(
            "        node{i} = derivation {{ name = \"bench-node{i}\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
             closure = builtins.storePath \"{}\"; args = [ \"-c\" \"echo node{i} $closure > $out\" ]; }};\n",
            closure.root
        );
        let peer = peer.as_ref().map_or(String::new(), |a| {
            format!(" peerAddress = \"{a}\"; peerPort = 22;")
        });
        inventory += &format!(
            "        nodes.node{i} = {{ hostname = \"192.0.2.{i}\"; role = \"{role}\";{peer} }};\n"
        );
    }
    if let Some(url) = cache {
        inventory += &format!("        cluster.cache.url = \"{url}\";\n");
    }
    let text = format!(
        "{{\n  inputs.nixpkgs.url = \"github:NixOS/nixpkgs/nixos-26.05\";\n  \
         inputs.nix-deploy.url = \"github:nix-deploy/nix-deploy\";\n  \
         inputs.nix-deploy.inputs.nixpkgs.follows = \"nixpkgs\";\n  \
         outputs = {{ self, nixpkgs, nix-deploy }}: {{\n      packages.x86_64-linux = {{\n{packages}      }};\n      \
         deploy = nix-deploy.lib.mkDeploy {{\n        packages = self.packages;\n{inventory}      }};\n    }};\n}}\n"
    );
    std::fs::write(dir.path().join("flake.nix"), text).map_err(|e| e.to_string())?;
    // Inside the user's flake directory, so it lives as long.
    std::fs::rename(this.path(), dir.path().join("nix-deploy")).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// A cold `deploy all --goal switch` of `nodes` fresh nodes behind a
/// `mbit` uplink with `rtt` more round trip, checked.
fn deploy(
    nodes: usize,
    mbit: u32,
    mode: &str,
    rtt: Duration,
    receiver: &str,
    relay: &str,
    closure: &Closure,
) -> Result<Sample, String> {
    let mut spec = ClusterSpec::new().in_memory();
    for i in 1..=nodes {
        spec = spec.node(&format!("n{i}"), NodeKind::Trixie);
    }
    let cluster = Cluster::start(&spec).map_err(|e| e.to_string())?;
    let netns = cluster
        .deployer_netns(Some(mbit))
        .map_err(|e| e.to_string())?;
    // With a round trip, the deployer reaches the nodes through relays and
    // they reach each other at their own addresses.
    let (ssh_config, peers) = match rtt.is_zero() {
        true => (cluster.ssh_config().to_owned(), vec![None; nodes]),
        false => (
            cluster.delay_deployer(rtt).map_err(|e| e.to_string())?,
            cluster
                .nodes()
                .iter()
                .map(|n| Some(n.ip().to_string()))
                .collect(),
        ),
    };
    // Mode `cache`: a cache on the nodes' side, its own flake, and the
    // nodes prepared to read it (untimed).
    let cache_root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = match mode {
        "cache" => {
            let host = cluster.nodes()[0].host_ip();
            Some(CacheServer::nginx(host, cache_root.path()).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let flake = user_flake(closure, &peers, server.as_ref().map(|s| s.url()).as_deref())?;
    if server.is_some() {
        let mut prepare = Command::new(deploy_binary()?);
        prepare.arg("prepare");
        user_args(&mut prepare, &flake, cluster.ssh_config(), nodes);
        measure(&mut prepare)?;
    }
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &netns]).arg(deploy_binary()?);
    user_args(&mut c, &flake, &ssh_config, nodes);
    c.args(["--goal", "switch", "--json"])
        .args(["--receiver", receiver, "--relay", relay]);
    if mode == "off" {
        c.args(["--fan-out", "off"]);
    }
    let cpu_of = |c: &Cluster| -> Vec<Duration> {
        c.nodes()
            .iter()
            .map(|n| n.cpu_time().unwrap_or_default())
            .collect()
    };
    let cpu_before = cpu_of(&cluster);
    let before = cluster.deployer_sent_bytes().map_err(|e| e.to_string())?;
    let m = measure(&mut c)?;
    let per_node: Vec<Duration> = cpu_of(&cluster)
        .into_iter()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before))
        .collect();
    let cpu_nodes: Duration = per_node.iter().sum();
    let shown: Vec<String> = per_node
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64()))
        .collect();
    println!("  CPU s of each node (node1 first): {}", shown.join(" "));
    // The deploy's events, for a look at what it chose.
    let log = std::env::temp_dir().join(format!("fanout-{nodes}-{mode}-{mbit}.json"));
    let timed: String = m
        .stdout
        .lines()
        .zip(&m.line_times)
        .map(|(line, t)| format!("{:8.3} {line}\n", t.as_secs_f64()))
        .collect();
    std::fs::write(&log, timed).map_err(|e| e.to_string())?;
    let uplink = cluster.deployer_sent_bytes().map_err(|e| e.to_string())? - before;
    for node in cluster.nodes() {
        node.verify_store().map_err(|e| e.to_string())?;
        let profile = node
            .run_ok("readlink -f /nix/var/nix/profiles/nix-deploy")
            .map_err(|e| e.to_string())?;
        let listed = node
            .run_ok(&format!("nix-store -qR {} | wc -l", profile.trim()))
            .map_err(|e| e.to_string())?;
        let want = closure.paths.len() + 1;
        if listed.trim() != want.to_string() {
            return Err(format!(
                "{}: {} paths under the profile, want {want}",
                node.name(),
                listed.trim()
            ));
        }
    }
    Ok(Sample {
        wall: m.wall,
        uplink,
        cpu: m.cpu + cpu_nodes,
        cpu_deployer: m.cpu,
    })
}

/// The flake, SSH and target arguments of a deploy of `node1` … `nodeN`.
fn user_args(c: &mut Command, flake: &tempfile::TempDir, ssh_config: &Path, nodes: usize) {
    c.arg("--flake")
        .arg(flake_ref(flake.path()))
        .args(nix_args(&fixture_nixpkgs()))
        .args(["--override-input", "nix-deploy"])
        .arg(flake_ref(&flake.path().join("nix-deploy")))
        .args(["--option", "pure-eval", "false", "--no-agent"])
        .arg("--ssh-config")
        .arg(ssh_config);
    for i in 1..=nodes {
        c.arg("--target").arg(format!("node{i}=n{i}"));
    }
    c.args((1..=nodes).map(|i| format!("node{i}")));
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}
