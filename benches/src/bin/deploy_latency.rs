//! Deploy latency on the local test cluster (issue 4): the no-op `deploy
//! all` of three nodes (everything already there) and `deploy --diff`, both
//! through the real CLI with the repository's flake (nixpkgs replaced by the
//! fixture set, a third node added to the inventory), and the same two
//! operations through the library with an 801-path closure as the profile.
//! Medians of `--runs` runs (default 5); the target is under 1 s each.
//!
//! Usage: `deploy_latency [--runs N]`. Needs root and
//! `scripts/setup-test-machine`.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use benches::{deploy_binary, median};
use deploy_ssh::Target;
use nix_deploy::deploy::{deploy_nodes, diff_nodes, DeployOptions, Goal, NodePlan, NodeStatus};
use nix_wire::StorePath;
use test_cluster::{Cluster, ClusterSpec, NodeKind};
use test_support::flake::{copy_flake, edit, fixture_nixpkgs, flake_ref, nix_args};

const NODES: [&str; 3] = [
    "k8s-cluster-main",
    "k8s-cluster-node-1",
    "k8s-cluster-node-2",
];
const TARGET: Duration = Duration::from_secs(1);

fn timed(runs: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Duration, String> {
    f()?; // warm-up: evaluation caches, first connections
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    Ok(median(times))
}

fn deploy_cli(flake: &Path, cluster: &Cluster, args: &[&str]) -> Result<(), String> {
    let mut c = Command::new(deploy_binary()?);
    c.arg("--flake")
        .arg(flake_ref(flake))
        .args(nix_args(&fixture_nixpkgs()));
    c.arg("--ssh-config")
        .arg(cluster.ssh_config())
        .arg("--no-agent")
        .arg("-q");
    for (i, name) in NODES.iter().enumerate() {
        c.arg("--target").arg(format!("{name}=node{i}"));
    }
    let out = c.args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "deploy {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn report(what: &str, d: Duration) {
    let verdict = if d < TARGET { "PASS" } else { "MISS" };
    println!(
        "{what:58} {:>8.3} s   target < 1 s: {verdict}",
        d.as_secs_f64()
    );
}

async fn library(cluster: &Cluster, runs: usize) -> Result<(), String> {
    let old = test_support::fixture_closure(700, "latency", 4);
    let new = test_support::fixture_closure(800, "latency", 4);
    let opts = DeployOptions {
        goal: Goal::Switch,
        ssh: cluster.ssh_options(),
        ..DeployOptions::default()
    };
    let plans = |root: &str| -> Vec<NodePlan> {
        (0..NODES.len())
            .map(|i| NodePlan {
                name: format!("node{i}"),
                target: Target::new(format!("node{i}")),
                profile_path: "/nix/var/nix/profiles/latency".into(),
                profile: StorePath::parse(root).expect("fixture root is a store path"),
                peer_address: None,
                peer_port: None,
            })
            .collect()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    for o in deploy_nodes(plans(&old.root), &opts, None, &cancel).await {
        if !o.status.is_success() {
            return Err(format!("{}: {:?}", o.name, o.status));
        }
    }
    let mut diffs = Vec::new();
    let mut noops = Vec::new();
    for run in 0..=runs {
        let t = Instant::now();
        for (name, d) in diff_nodes(plans(&new.root), &opts).await {
            let d = d.map_err(|e| format!("{name}: {e}"))?;
            if d.transfer_paths() != 101 {
                return Err(format!(
                    "{name}: expected 101 paths to send, preview says {}",
                    d.transfer_paths()
                ));
            }
        }
        if run > 0 {
            diffs.push(t.elapsed());
        }
    }
    for o in deploy_nodes(plans(&new.root), &opts, None, &cancel).await {
        if !o.status.is_success() {
            return Err(format!("{}: {:?}", o.name, o.status));
        }
    }
    for run in 0..=runs {
        let t = Instant::now();
        for o in deploy_nodes(plans(&new.root), &opts, None, &cancel).await {
            match o.status {
                NodeStatus::Done if o.sent_paths == 0 => {}
                NodeStatus::Done => {
                    return Err(format!("{}: a no-op sent {} paths", o.name, o.sent_paths))
                }
                other => return Err(format!("{}: {other:?}", o.name)),
            }
        }
        if run > 0 {
            noops.push(t.elapsed());
        }
    }
    report(
        "library: --diff, 3 nodes, 801-path closure (101 new)",
        median(diffs),
    );
    report(
        "library: no-op deploy, 3 nodes, 801-path closure",
        median(noops),
    );
    Ok(())
}

fn bench(runs: usize) -> Result<(), String> {
    let spec = NODES
        .iter()
        .enumerate()
        .fold(ClusterSpec::new(), |s, (i, _)| {
            s.node(&format!("node{i}"), NodeKind::Trixie)
        });
    let cluster = Cluster::start(&spec).map_err(|e| e.to_string())?;

    // The repository's flake with a third node: a hosts file and an entry.
    let flake = copy_flake();
    std::fs::copy(
        flake.path().join("hosts/k8s-cluster-node-1.nix"),
        flake.path().join("hosts/k8s-cluster-node-2.nix"),
    )
    .map_err(|e| e.to_string())?;
    edit(
        &flake.path().join("flake.nix"),
        "k8s-cluster-node-1 = {",
        "k8s-cluster-node-2 = { hostname = \"203.0.113.12\"; role = \"agent\"; };\n          k8s-cluster-node-1 = {",
    );
    deploy_cli(flake.path(), &cluster, &["all"])?;
    println!("{:58} {:>10}", "operation (median)", "time");
    report(
        "CLI: no-op `deploy all`, 3 nodes (flake eval + build + ssh)",
        timed(runs, || deploy_cli(flake.path(), &cluster, &["all"]))?,
    );
    report(
        "CLI: `deploy --diff`, 3 nodes",
        timed(runs, || deploy_cli(flake.path(), &cluster, &["--diff"]))?,
    );

    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(library(&cluster, runs))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let runs = match argv.as_slice() {
        [] => Ok(5),
        [flag, n] if flag == "--runs" => n.parse().map_err(|_| format!("bad --runs {n}")),
        _ => Err("usage: deploy_latency [--runs N]".to_owned()),
    };
    match runs.and_then(bench) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deploy_latency: {e}");
            ExitCode::FAILURE
        }
    }
}
