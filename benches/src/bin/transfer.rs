//! Transfer speed: a real closure (`tests/fixtures/real-closure.nix`, ~930
//! paths, ~450 MB of this machine's libraries, headers and Python modules)
//! copied cold into a fresh test-cluster node (Debian 13, Nix 2.26) by our
//! engine, by `nix copy --to ssh-ng://` and by raw OpenSSH pipes of the
//! same bytes; then the no-op copy (everything present) and our peak RSS.
//! The same again on a link shaped to 100 Mbit/s.
//!
//! Usage: `transfer [--runs N] [--mbit M] [--parts cold,noop,shaped,noop-shaped]
//! [--salt S] [--shape wide|chain] [--full]`. Defaults: 3 runs, 100 Mbit/s, all parts, salt
//! `bench`. On the shaped link: ours (jobs=4), `nix copy`, the raw pipe,
//! and both with zlib (`Compression yes` / `NIX_SSHOPTS=-C`); jobs=1, the
//! import pipe and the deploy-ssh pipe only on the unshaped link unless
//! `--full`. `noop-shaped` fills a node at full speed, shapes its link, then
//! times the no-op copies. Every cold copy goes to a node of its own and
//! is checked (`nix-store --verify --check-contents` and the path count on
//! the node, or the byte count through the pipe). Prints medians, ratios
//! and the targets of issue 3. Needs root and `scripts/setup-test-machine`.
//!
//! `transfer --one-copy SSH_CONFIG NODE JOBS ROOT` is the child process
//! that runs one copy of ours; `transfer --one-pipe SSH_CONFIG NODE ROOT`
//! the diagnostic one that streams the closure's NARs through one
//! deploy-ssh channel into `wc -c` (our transport without a Nix daemon).

#[path = "transfer/methods.rs"]
mod methods;
#[path = "transfer/one_copy.rs"]
mod one_copy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use methods::{Closure, Measured, Method};
use test_cluster::{Cluster, ClusterSpec, NodeKind};

struct Args {
    runs: usize,
    mbit: u32,
    parts: Vec<String>,
    salt: String,
    shape: String,
    full: bool,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = if argv.first().map(String::as_str) == Some("--one-copy") {
        match &argv[1..] {
            [config, node, jobs, root] => match (jobs.as_str(), jobs.parse()) {
                ("auto", _) => one_copy::run(PathBuf::from(config), node, None, root),
                (_, Ok(jobs)) => one_copy::run(PathBuf::from(config), node, Some(jobs), root),
                (_, Err(_)) => Err(format!("bad jobs {jobs}")),
            },
            _ => Err("usage: transfer --one-copy SSH_CONFIG NODE JOBS ROOT".into()),
        }
    } else if argv.first().map(String::as_str) == Some("--one-pipe") {
        match &argv[1..] {
            [config, node, root] => one_copy::pipe(PathBuf::from(config), node, root),
            _ => Err("usage: transfer --one-pipe SSH_CONFIG NODE ROOT".into()),
        }
    } else {
        parse(&argv).and_then(|a| bench(&a))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transfer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        runs: 3,
        mbit: 100,
        parts: ["cold", "noop", "shaped", "noop-shaped"]
            .map(String::from)
            .to_vec(),
        salt: "bench".into(),
        shape: "wide".into(),
        full: false,
    };
    let usage =
        "usage: transfer [--runs N] [--mbit M] [--parts cold,noop,shaped,noop-shaped] [--salt S] [--shape wide|chain] [--full]";
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(usage.to_string());
        match flag.as_str() {
            "--runs" => a.runs = value()?.parse().map_err(|_| usage)?,
            "--mbit" => a.mbit = value()?.parse().map_err(|_| usage)?,
            "--parts" => a.parts = value()?.split(',').map(str::to_owned).collect(),
            "--salt" => a.salt = value()?,
            "--shape" => a.shape = value()?,
            "--full" => a.full = true,
            _ => return Err(usage.into()),
        }
    }
    if a.runs == 0 {
        return Err(usage.into());
    }
    Ok(a)
}

fn bench(a: &Args) -> Result<(), String> {
    let closure = build(&a.salt, &a.shape)?;
    let mib = closure.nar_bytes as f64 / 1048576.0;
    println!(
        "closure {}: {} paths, NAR {} bytes ({mib:.0} MiB), export {} bytes",
        closure.root,
        closure.paths.len(),
        closure.nar_bytes,
        closure.export_bytes
    );
    let part = |name: &str| a.parts.iter().any(|p| p == name);
    // (link, measure cold copies, measure no-op copies)
    let mut links = Vec::new();
    if part("cold") || part("noop") {
        links.push((None, part("cold"), part("noop")));
    }
    if part("shaped") || part("noop-shaped") {
        links.push((Some(a.mbit), part("shaped"), part("noop-shaped")));
    }
    for (link, cold, noop) in links {
        let mut methods = vec![Method::Ours, Method::NixCopy, Method::RawPipe];
        if link.is_some() || a.full {
            methods.extend([Method::OursCompressed, Method::NixCopyCompressed]);
        }
        if link.is_none() || a.full {
            methods.extend([Method::OursJobs1, Method::RawImport, Method::OursPipe]);
        }
        if !cold {
            methods = vec![Method::Ours];
        }
        let name = link.map_or("unshaped veth".to_string(), |m| format!("{m} Mbit/s tbf"));
        println!("\n== link: {name} ==");
        let mut samples: BTreeMap<&str, Vec<Measured>> = BTreeMap::new();
        for run in 0..a.runs {
            // Rotate the order so no method always goes first.
            let mut order = methods.clone();
            order.rotate_left(run % methods.len());
            for method in order {
                let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie))
                    .map_err(|e| e.to_string())?;
                let node = &cluster.nodes()[0];
                // Without cold rows, fill the node at full speed, then shape.
                if let (Some(m), true) = (link, cold) {
                    node.shape(m).map_err(|e| e.to_string())?;
                }
                let m = methods::copy(method, &cluster, node, &closure)?;
                if let (Some(m), false) = (link, cold) {
                    node.shape(m).map_err(|e| e.to_string())?;
                }
                print!(
                    "run {} {:<32} {:>8.2}s  rss {:>4} MiB",
                    run + 1,
                    method.label(),
                    m.wall.as_secs_f64(),
                    m.max_rss_kib / 1024
                );
                if method == Method::Ours {
                    print!("  (engine {}s)", field(&m.stdout, 2));
                }
                println!();
                methods::check(method, &m, node, &closure)?;
                if method == Method::Ours && noop {
                    let o = methods::ours(cluster.ssh_config(), node, 4, &closure.root)?;
                    let n = methods::nix_copy(cluster.ssh_config(), node, &closure.root, false)?;
                    println!(
                        "      no-op: ours {:.3}s  nix copy {:.3}s",
                        o.wall.as_secs_f64(),
                        n.wall.as_secs_f64()
                    );
                    if field(&o.stdout, 0) != "0" {
                        return Err(format!("the no-op copy sent: {}", o.stdout.trim()));
                    }
                    samples.entry("no-op: ours").or_default().push(o);
                    samples.entry("no-op: nix copy").or_default().push(n);
                }
                if cold {
                    samples.entry(method.label()).or_default().push(m);
                }
            }
        }
        report(&samples, mib, cold, noop);
    }
    Ok(())
}

/// Builds the fixture and measures its closure (and warms the page cache).
fn build(salt: &str, shape: &str) -> Result<Closure, String> {
    let expr = test_support::repo_root().join("tests/fixtures/real-closure.nix");
    eprintln!("building {} (salt {salt}, shape {shape}) …", expr.display());
    let mut cmd = Command::new("nix-build");
    cmd.arg(&expr)
        .args(["--no-out-link", "--option", "substituters", ""])
        .args(["--max-jobs", "6", "--argstr", "salt", salt])
        .args(["--argstr", "shape", shape]);
    let root = methods::measure(&mut cmd)?.stdout.trim().to_owned();
    let paths: Vec<String> = methods::measure(Command::new("nix-store").args(["-qR", &root]))?
        .stdout
        .lines()
        .map(str::to_owned)
        .collect();
    let sizes = methods::measure(
        Command::new("nix-store")
            .args(["-q", "--size"])
            .args(&paths),
    )?;
    let nar_bytes = sizes
        .stdout
        .lines()
        .map(|l| {
            l.trim()
                .parse::<u64>()
                .map_err(|e| format!("size {l}: {e}"))
        })
        .sum::<Result<u64, String>>()?;
    eprintln!("exporting it once to warm the page cache …");
    let script = "set -o pipefail; nix-store --export $(nix-store -qR \"$1\") | wc -c";
    let export = methods::measure(Command::new("bash").args(["-c", script, "bash", &root]))?;
    eprintln!(
        "local nix-store --export | wc -c: {:.2}s",
        export.wall.as_secs_f64()
    );
    let export_bytes = field(&export.stdout, 0)
        .parse()
        .map_err(|_| format!("bad wc output {}", export.stdout))?;
    Ok(Closure {
        root,
        paths,
        nar_bytes,
        export_bytes,
    })
}

/// Prints the medians table, the ratios and the targets.
fn report(samples: &BTreeMap<&str, Vec<Measured>>, mib: f64, cold: bool, noop: bool) {
    let med = |k: &str| samples.get(k).map(|v| median(v.iter().map(|m| m.wall)));
    println!(
        "\n{:<32} {:>5} {:>9} {:>9} {:>9} {:>8} {:>9} {:>10}",
        "method", "runs", "median s", "min s", "max s", "MiB/s", "CPU s", "peak RSS"
    );
    for (k, v) in samples {
        let mut walls: Vec<Duration> = v.iter().map(|m| m.wall).collect();
        walls.sort();
        let m = median(walls.iter().copied());
        let rss = v.iter().map(|m| m.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let speed = if k.starts_with("no-op") {
            "-".to_string()
        } else {
            format!("{:.0}", mib / m.as_secs_f64())
        };
        let cpu = median(v.iter().map(|m| m.cpu));
        println!(
            "{k:<32} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>8} {:>9.2} {:>6.1} MiB",
            v.len(),
            m.as_secs_f64(),
            walls[0].as_secs_f64(),
            walls[walls.len() - 1].as_secs_f64(),
            speed,
            cpu.as_secs_f64(),
            rss
        );
    }
    println!();
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    if cold {
        if let (Some(o), Some(n)) = (med(Method::Ours.label()), med(Method::NixCopy.label())) {
            let r = n.as_secs_f64() / o.as_secs_f64();
            println!(
                "cold: nix copy / ours = {r:.2}x  (target >= 1.30x)  {}",
                verdict(r >= 1.3)
            );
        }
        if let (Some(o), Some(p)) = (med(Method::Ours.label()), med(Method::RawPipe.label())) {
            let r = o.as_secs_f64() / p.as_secs_f64();
            println!(
                "cold: ours / raw ssh pipe = {r:.2}  (target <= 1.00)  {}",
                verdict(r <= 1.0)
            );
        }
        if let (Some(o), Some(n)) = (
            med(Method::OursCompressed.label()),
            med(Method::NixCopy.label()),
        ) {
            let r = n.as_secs_f64() / o.as_secs_f64();
            println!("cold: nix copy / ours with Compression yes = {r:.2}x  (for information)");
        }
        if let (Some(o), Some(n)) = (
            med(Method::OursCompressed.label()),
            med(Method::NixCopyCompressed.label()),
        ) {
            let r = n.as_secs_f64() / o.as_secs_f64();
            println!("cold: nix copy -C / ours with Compression yes = {r:.2}x  (for information)");
        }
        if let (Some(o), Some(p)) = (med(Method::Ours.label()), med(Method::RawImport.label())) {
            let r = o.as_secs_f64() / p.as_secs_f64();
            println!("cold: ours / ssh nix-store --import = {r:.2}  (for information)");
        }
    }
    if noop {
        if let (Some(o), Some(n)) = (med("no-op: ours"), med("no-op: nix copy")) {
            let r = o.as_secs_f64() / n.as_secs_f64();
            println!(
                "no-op: ours / nix copy = {r:.2}  (target <= 1.00)  {}",
                verdict(r <= 1.0)
            );
        }
    }
    let ours_rss = samples
        .iter()
        .filter(|(k, _)| k.starts_with("ours (") || k.starts_with("ours,") || **k == "no-op: ours")
        .flat_map(|(_, v)| v.iter().map(|m| m.max_rss_kib))
        .max();
    if let Some(kib) = ours_rss {
        let mib = kib as f64 / 1024.0;
        println!(
            "peak RSS of ours = {mib:.1} MiB  (target < 64 MiB)  {}",
            verdict(mib < 64.0)
        );
    }
}

fn median(times: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = times.collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn field(s: &str, i: usize) -> String {
    s.split_whitespace().nth(i).unwrap_or_default().to_owned()
}
