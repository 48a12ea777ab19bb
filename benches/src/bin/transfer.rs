//! Transfer speed (issue 10): a real closure (`tests/fixtures/real-closure.nix`,
//! ~930 paths, ~450 MB of this machine's libraries, headers and Python
//! modules) in several shapes, copied cold into fresh test-cluster nodes
//! (Debian 13, Nix 2.26, files in memory) over links of several speeds and
//! round trips, by ours (`deploy copy` and `deploy all`, the real binary),
//! `nix copy --to ssh-ng://` and the raw OpenSSH pipe; then the no-op copy.
//!
//! Usage: `transfer [--runs N] [--shapes S,...] [--links L,...]
//! [--methods M,...] [--salt S] [--noop]`.
//! - shapes: `wide` (default), `chain`, `small-first`, `huge-first`;
//! - links: `unshaped` (default), `<N>mbit`, `rtt<MS>`, `rtt<MS>+<N>mbit`;
//! - methods: `ours`, `ours-plain` (`--compression no`), `deploy-all`,
//!   `nix-copy`, `pipe` (default: ours, ours-plain, nix-copy).
//!
//! Every cold copy goes to a node of its own and is checked (`nix-store
//! --verify --check-contents` and the closure on the node, or the byte
//! count through the pipe). Prints, per shape and link, medians with our
//! CPU and the node's (its cgroup: sshd, daemons, receiver), then the
//! ratios and the targets, and at the end one line per shape and
//! link. Needs root, `scripts/setup-test-machine` and
//! `cargo build --release -p deploy-cli`.

#[path = "transfer/deploy_all.rs"]
mod deploy_all;
#[path = "transfer/methods.rs"]
mod methods;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use benches::median;
use benches::Closure;
use methods::{Method, Run};
use test_cluster::{Cluster, ClusterSpec, NodeKind};

struct Args {
    runs: usize,
    shapes: Vec<String>,
    links: Vec<Link>,
    methods: Vec<Method>,
    salt: String,
    noop: bool,
}

/// A link to shape a node's with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    mbit: Option<u32>,
    rtt_ms: u64,
}

impl Link {
    fn parse(s: &str) -> Option<Link> {
        if s == "unshaped" {
            return Some(Link {
                mbit: None,
                rtt_ms: 0,
            });
        }
        let (rtt, mbit) = match s.split_once('+') {
            Some((r, m)) => (Some(r), Some(m)),
            None if s.starts_with("rtt") => (Some(s), None),
            None => (None, Some(s)),
        };
        Some(Link {
            rtt_ms: match rtt {
                Some(r) => r.strip_prefix("rtt")?.parse().ok()?,
                None => 0,
            },
            mbit: match mbit {
                Some(m) => Some(m.strip_suffix("mbit")?.parse().ok()?),
                None => None,
            },
        })
    }

    fn label(self) -> String {
        match (self.mbit, self.rtt_ms) {
            (None, 0) => "unshaped veth".to_owned(),
            (Some(m), 0) => format!("{m} Mbit/s"),
            (None, r) => format!("{r} ms RTT"),
            (Some(m), r) => format!("{r} ms RTT, {m} Mbit/s"),
        }
    }

    /// The bar for `nix copy / ours`, if it sets one.
    fn target(self) -> Option<f64> {
        match (self.mbit, self.rtt_ms) {
            (None, 0) => Some(1.0),
            (Some(100), 0) => Some(2.7),
            (Some(20), 0) => Some(3.0),
            (None, 80) => Some(2.0),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match parse(&argv).and_then(|a| bench(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transfer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let usage = "usage: transfer [--runs N] [--shapes wide,chain,small-first,huge-first] \
                 [--links unshaped,100mbit,rtt80,rtt40+100mbit,...] \
                 [--methods ours,ours-plain,deploy-all,nix-copy,pipe] [--salt S] [--noop]";
    let mut a = Args {
        runs: 3,
        shapes: vec!["wide".into()],
        links: vec![Link {
            mbit: None,
            rtt_ms: 0,
        }],
        methods: vec![Method::Ours, Method::OursPlain, Method::NixCopy],
        salt: "bench".into(),
        noop: false,
    };
    let list = |v: String| v.split(',').map(str::to_owned).collect::<Vec<_>>();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(usage.to_string());
        match flag.as_str() {
            "--runs" => a.runs = value()?.parse().map_err(|_| usage)?,
            "--shapes" => a.shapes = list(value()?),
            "--links" => {
                a.links = list(value()?)
                    .iter()
                    .map(|l| Link::parse(l).ok_or(usage))
                    .collect::<Result<_, _>>()?
            }
            "--methods" => {
                a.methods = list(value()?)
                    .iter()
                    .map(|m| Method::parse(m).ok_or(usage))
                    .collect::<Result<_, _>>()?
            }
            "--salt" => a.salt = value()?,
            "--noop" => a.noop = true,
            _ => return Err(usage.into()),
        }
    }
    if a.runs == 0 || a.methods.is_empty() {
        return Err(usage.into());
    }
    Ok(a)
}

/// One (shape, link)'s samples by row label.
type Samples = BTreeMap<String, Vec<Run>>;

fn bench(a: &Args) -> Result<(), String> {
    let receiver = test_support::receiver_package();
    let mut summary = Vec::new();
    for shape in &a.shapes {
        let closure = benches::real_closure(&a.salt, shape)?;
        let flake = a
            .methods
            .contains(&Method::DeployAll)
            .then(|| deploy_all::Flake::new(&closure.root));
        println!(
            "\nclosure {} ({shape}): {} paths, NAR {} bytes ({:.0} MiB)",
            closure.root,
            closure.paths.len(),
            closure.nar_bytes,
            mib(closure.nar_bytes)
        );
        if summary.is_empty() {
            warm_up(&closure, &receiver)?;
        }
        for &link in &a.links {
            println!("\n== {shape}, {} ==", link.label());
            let mut samples = Samples::new();
            for run in 0..a.runs {
                // Rotate the order so no method always goes first.
                let mut order = a.methods.clone();
                let n = order.len();
                order.rotate_left(run % n);
                for method in order {
                    let cluster =
                        Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie).in_memory())
                            .map_err(|e| e.to_string())?;
                    let node = &cluster.nodes()[0];
                    if let Some(m) = link.mbit {
                        node.shape(m).map_err(|e| e.to_string())?;
                    }
                    if link.rtt_ms > 0 {
                        node.delay(Duration::from_millis(link.rtt_ms))
                            .map_err(|e| e.to_string())?;
                    }
                    let r = timed(node, || match method {
                        Method::Ours => {
                            methods::deploy_copy(&cluster, node, &closure.root, &receiver, &[])
                        }
                        Method::OursPlain => methods::deploy_copy(
                            &cluster,
                            node,
                            &closure.root,
                            &receiver,
                            &["--compression", "no"],
                        ),
                        Method::DeployAll => flake
                            .as_ref()
                            .ok_or("no flake")?
                            .deploy(&cluster, node, &receiver),
                        Method::NixCopy => {
                            methods::nix_copy(cluster.ssh_config(), node, &closure.root)
                        }
                        Method::Pipe => methods::pipe(cluster.ssh_config(), node, &closure.root),
                    })?;
                    methods::check(method, &r.measured, node, &closure)?;
                    println!(
                        "run {} {:<34} {:>8.2}s  cpu {:>5.2}s  node {:>5}  rss {:>3} MiB  {}",
                        run + 1,
                        method.label(),
                        r.measured.wall.as_secs_f64(),
                        r.measured.cpu.as_secs_f64(),
                        r.node_cpu
                            .map_or("-".into(), |c| format!("{:.2}s", c.as_secs_f64())),
                        r.measured.max_rss_kib / 1024,
                        r.compression.as_deref().unwrap_or("")
                    );
                    if method == Method::Ours && a.noop {
                        let o = timed(node, || {
                            methods::deploy_copy(&cluster, node, &closure.root, &receiver, &[])
                        })?;
                        let n = timed(node, || {
                            methods::nix_copy(cluster.ssh_config(), node, &closure.root)
                        })?;
                        samples.entry("no-op: ours".into()).or_default().push(o);
                        samples.entry("no-op: nix copy".into()).or_default().push(n);
                    }
                    samples.entry(method.label().into()).or_default().push(r);
                }
            }
            report(&samples, &closure, link, &mut summary);
        }
    }
    println!("\n== summary: nix copy / ours (median wall-clock) ==");
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

/// One untimed copy to a fresh node, so that no method's first run pays
/// for what stays in the page cache afterwards (the node template's
/// programs and libraries, sshd's and the daemon's first start).
fn warm_up(closure: &Closure, receiver: &str) -> Result<(), String> {
    let spec = ClusterSpec::new().node("n", NodeKind::Trixie).in_memory();
    let cluster = Cluster::start(&spec).map_err(|e| e.to_string())?;
    let node = &cluster.nodes()[0];
    let flags = ["--compression", "no"];
    methods::deploy_copy(&cluster, node, &closure.root, receiver, &flags)?;
    methods::nix_copy(cluster.ssh_config(), node, &closure.root).map(drop)
}

/// Runs `f` (one child process), counting the node's CPU meanwhile.
fn timed(
    node: &test_cluster::Node,
    f: impl FnOnce() -> Result<benches::Measured, String>,
) -> Result<Run, String> {
    let before = node.cpu_time();
    let measured = f()?;
    let node_cpu = match (before, node.cpu_time()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let compression = methods::compression(&methods::events(&measured.stdout));
    Ok(Run {
        measured,
        node_cpu,
        compression,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Prints one (shape, link)'s table, ratios and targets; adds its line to
/// `summary`.
fn report(samples: &Samples, closure: &Closure, link: Link, summary: &mut Vec<String>) {
    let med = |k: &str| {
        samples
            .get(k)
            .map(|v| median(v.iter().map(|r| r.measured.wall)))
    };
    let cpu = |k: &str| {
        samples.get(k).map(|v| {
            (
                median(v.iter().map(|r| r.measured.cpu)),
                median(v.iter().filter_map(|r| r.node_cpu)),
            )
        })
    };
    println!(
        "\n{:<34} {:>4} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>8}  how",
        "method", "runs", "median s", "min s", "max s", "MiB/s", "ours", "node", "peak RSS"
    );
    for (k, v) in samples {
        let mut walls: Vec<Duration> = v.iter().map(|r| r.measured.wall).collect();
        walls.sort();
        let m = median(walls.iter().copied());
        let speed = match k.starts_with("no-op") {
            true => "-".to_string(),
            false => format!("{:.0}", mib(closure.nar_bytes) / m.as_secs_f64()),
        };
        let (ours_cpu, node_cpu) = cpu(k).unwrap_or_default();
        let rss = v.iter().map(|r| r.measured.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let how = v
            .iter()
            .rev()
            .find_map(|r| r.compression.clone())
            .unwrap_or_default();
        println!(
            "{k:<34} {:>4} {:>8.3} {:>8.3} {:>8.3} {:>6} {:>6.2} {:>6.2} {:>4.1} MiB  {how}",
            v.len(),
            m.as_secs_f64(),
            walls[0].as_secs_f64(),
            walls[walls.len() - 1].as_secs_f64(),
            speed,
            ours_cpu.as_secs_f64(),
            node_cpu.as_secs_f64(),
            rss
        );
    }
    println!();
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let nix = med(Method::NixCopy.label());
    let ours = med(Method::Ours.label());
    let mut line = format!("{:<12} {:<24}", closure.shape, link.label());
    for method in [Method::Ours, Method::DeployAll] {
        if let (Some(n), Some(o)) = (nix, med(method.label())) {
            let r = n.as_secs_f64() / o.as_secs_f64();
            let bar = link.target().map_or("(no bar)".to_owned(), |t| {
                format!("(target >= {t:.2}x)  {}", verdict(r >= t))
            });
            println!("cold: nix copy / {} = {r:.2}x  {bar}", method.label());
            line += &format!("  {}: {r:.2}x", method.label());
        }
    }
    if let (Some(o), Some(p)) = (ours, med(Method::OursPlain.label())) {
        let r = o.as_secs_f64() / p.as_secs_f64();
        let bar = match link.mbit.is_none() && link.rtt_ms == 0 {
            true => format!("(target <= 1.05 unshaped)  {}", verdict(r <= 1.05)),
            false => "(for information)".to_owned(),
        };
        println!("cold: ours default / ours --compression no = {r:.2}  {bar}");
    }
    if let (Some((oc, on)), Some((nc, nn))) =
        (cpu(Method::Ours.label()), cpu(Method::NixCopy.label()))
    {
        let (o, n) = (oc + on, nc + nn);
        let bar = match link.mbit.is_none() && link.rtt_ms == 0 {
            true => format!("(target <= nix copy's unshaped)  {}", verdict(o <= n)),
            false => "(for information)".to_owned(),
        };
        println!(
            "cold: CPU, ours + node: {:.2} s against nix copy's {:.2} s  {bar}",
            o.as_secs_f64(),
            n.as_secs_f64()
        );
    }
    if let (Some(o), Some(n)) = (med("no-op: ours"), med("no-op: nix copy")) {
        let r = o.as_secs_f64() / n.as_secs_f64();
        println!(
            "no-op: ours / nix copy = {r:.2}  (target <= 1.00)  {}",
            verdict(r <= 1.0)
        );
        line += &format!("  no-op {r:.2}");
    }
    let rss = samples
        .iter()
        .filter(|(k, _)| k.starts_with("ours") || k.as_str() == "no-op: ours")
        .flat_map(|(_, v)| v.iter().map(|r| r.measured.max_rss_kib))
        .max();
    if let Some(kib) = rss {
        let m = kib as f64 / 1024.0;
        println!(
            "peak RSS of ours = {m:.1} MiB  (target < 64 MiB)  {}",
            verdict(m < 64.0)
        );
    }
    summary.push(line);
}
