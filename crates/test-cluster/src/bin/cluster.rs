//! `cluster up [N] [--kind trixie|bare|local-nix] [--systemd] [--apt-mirror] [--mbit M]
//! [--delay MS] [--in-memory]`: brings up N nodes for a manual demo (`--systemd`:
//! booted with systemd as pid 1; with `--apt-mirror`,
//! their apt reaches the Debian mirror through the cluster's proxy; `--mbit`
//! shapes their links, `--delay` adds a round trip, `--in-memory` keeps
//! their files on tmpfs) and prints how to reach
//! them; Ctrl-C (or SIGTERM) tears them down. `cluster down`: removes clusters whose owner is gone (a `kill -9`ed `up`).

use std::process::ExitCode;

use test_cluster::{reap_stale, Cluster, ClusterSpec, NodeKind};

const USAGE: &str =
    "usage: cluster up [N] [--kind trixie|bare|local-nix] [--systemd] [--apt-mirror] \
                     [--mbit M] [--delay MS] [--in-memory] | cluster down";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        Some("down") => reap_stale()
            .map(|n| println!("reaped {n} stale cluster(s)"))
            .map_err(|e| e.to_string()),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn up(args: &[String]) -> Result<(), String> {
    let mut count = 2;
    let mut kind = NodeKind::Trixie;
    let (mut apt_mirror, mut in_memory, mut systemd) = (false, false, false);
    let (mut mbit, mut delay_ms) = (None, 0u64);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--kind" => {
                kind = match it.next().map(String::as_str) {
                    Some("trixie") => NodeKind::Trixie,
                    Some("bare") => NodeKind::Bare,
                    Some("local-nix") => NodeKind::LocalNix,
                    _ => return Err(USAGE.to_owned()),
                }
            }
            "--apt-mirror" => apt_mirror = true,
            "--systemd" => systemd = true,
            "--in-memory" => in_memory = true,
            "--mbit" => mbit = Some(number(it.next())?),
            "--delay" => delay_ms = number(it.next())?,
            n => count = n.parse().map_err(|_| USAGE.to_owned())?,
        }
    }
    let started = std::time::Instant::now();
    let mut spec = match systemd {
        true => (0..count).fold(ClusterSpec::new(), |s, i| {
            s.systemd_node(&format!("node{i}"), kind)
        }),
        false => ClusterSpec::uniform(kind, count),
    };
    spec.apt_mirror = apt_mirror;
    spec.in_memory = in_memory;
    let cluster = Cluster::start(&spec).map_err(|e| e.to_string())?;
    // Only now: the nodes' processes would inherit the blocked signals
    // (the delay relays' threads must: they are ours).
    let signals = block_signals();
    for node in cluster.nodes() {
        if let Some(m) = mbit {
            node.shape(u32::try_from(m).map_err(|_| USAGE.to_owned())?)
                .map_err(|e| e.to_string())?;
        }
        if delay_ms > 0 {
            node.delay(std::time::Duration::from_millis(delay_ms))
                .map_err(|e| e.to_string())?;
        }
    }
    println!(
        "{count} node(s) up in {:.1?} (cluster {})",
        started.elapsed(),
        cluster.id()
    );
    for node in cluster.nodes() {
        println!(
            "{}: {} ({}), inside without ssh: nsenter -t {} -n -m -u -p -r -w bash",
            node.name(),
            node.ip(),
            node.netns(),
            node.pid(),
        );
    }
    if let Some(proxy) = cluster.apt_proxy() {
        println!("apt in the nodes goes through the proxy at {proxy}");
    }
    let config = cluster.ssh_config().display();
    println!("ssh -F {config} NODE (as root), ssh -F {config} deploy@NODE, scp -F {config} ...");
    println!("Ctrl-C tears the cluster down.");
    wait_for(&signals);
    println!("tearing down");
    drop(cluster);
    Ok(())
}

fn number(arg: Option<&String>) -> Result<u64, String> {
    arg.and_then(|a| a.parse().ok())
        .ok_or_else(|| USAGE.to_owned())
}

/// Blocks SIGINT and SIGTERM (the process has only this thread now), so
/// [`wait_for`] can receive them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; the calls only read and write `set`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for one of the blocked signals.
fn wait_for(set: &libc::sigset_t) {
    let mut signal = 0;
    // SAFETY: `set` is an initialized signal set and `signal` a valid out-pointer.
    unsafe {
        libc::sigwait(set, &mut signal);
    }
}
