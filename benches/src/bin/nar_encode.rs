//! NAR encoding speed: our encoder + SHA-256 against
//! `nix-store --dump TREE | sha256sum`, on a large real tree.
//!
//! Usage: `nar_encode [TREE] [RUNS]` (default `/usr/lib`, 5 runs each). Runs
//! alternate between the two after a warm-up pass that fills the page cache;
//! every run must produce the same hash. Prints medians and the ratio.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let tree = PathBuf::from(args.next().unwrap_or_else(|| "/usr/lib".into()));
    let runs: usize = match args.next().map(|r| r.parse()) {
        None => 5,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: nar_encode [TREE] [RUNS]");
            return ExitCode::FAILURE;
        }
    };
    match bench(&tree, runs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nar_encode: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(tree: &Path, runs: usize) -> Result<(), String> {
    eprintln!("warming the page cache with {} …", tree.display());
    let warm = ours(tree)?.0;
    let size = warm.size;
    println!(
        "tree {}: NAR {} bytes ({:.0} MiB), {}",
        tree.display(),
        size,
        size as f64 / 1048576.0,
        warm.sha256.to_hex()
    );
    let (mut t_ours, mut t_nix) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (stats, t) = ours(tree)?;
        let (hex, tn) = nix(tree)?;
        if stats.sha256.to_hex() != hex || stats != warm {
            return Err(format!(
                "hash mismatch: ours {} nix {hex}",
                stats.sha256.to_hex()
            ));
        }
        println!(
            "run {}: ours {:.3}s  nix {:.3}s",
            i + 1,
            t.as_secs_f64(),
            tn.as_secs_f64()
        );
        t_ours.push(t);
        t_nix.push(tn);
    }
    let (mo, mn) = (median(&mut t_ours), median(&mut t_nix));
    let mib = size as f64 / 1048576.0;
    println!(
        "median ours {:.3}s ({:.0} MiB/s), nix-store --dump | sha256sum {:.3}s ({:.0} MiB/s)",
        mo.as_secs_f64(),
        mib / mo.as_secs_f64(),
        mn.as_secs_f64(),
        mib / mn.as_secs_f64()
    );
    println!(
        "ratio ours/nix time {:.2} (speed-up {:.2}x)",
        mo.as_secs_f64() / mn.as_secs_f64(),
        mn.as_secs_f64() / mo.as_secs_f64()
    );
    Ok(())
}

fn ours(tree: &Path) -> Result<(nix_wire::nar::NarStats, Duration), String> {
    let start = Instant::now();
    let stats = nix_wire::nar::hash_path(tree).map_err(|e| e.to_string())?;
    Ok((stats, start.elapsed()))
}

fn nix(tree: &Path) -> Result<(String, Duration), String> {
    let script = "set -o pipefail; nix-store --dump \"$1\" | sha256sum";
    let start = Instant::now();
    let out = Command::new("bash")
        .args(["-c", script, "bash"])
        .arg(tree)
        .output()
        .map_err(|e| format!("running nix-store: {e}"))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "nix-store --dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let hex = String::from_utf8_lossy(&out.stdout);
    let hex = hex
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((hex, elapsed))
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
