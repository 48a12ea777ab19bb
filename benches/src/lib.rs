//! What the benchmarks share: running a child process timed wall-clock,
//! with its CPU time and peak memory, and medians.

use std::io::{BufRead, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One finished child process.
pub struct Measured {
    /// Wall-clock from spawn to exit.
    pub wall: Duration,
    /// Peak resident set of the child or of one of the descendants it
    /// waited for (Linux's `wait4` semantics), KiB.
    pub max_rss_kib: u64,
    /// CPU time (user + system) of the child and the descendants it waited
    /// for: this machine's side only.
    pub cpu: Duration,
    /// Its stdout.
    pub stdout: String,
    /// When each line of stdout arrived, from the spawn.
    pub line_times: Vec<Duration>,
}

/// Runs `cmd` to completion; fails with its stderr unless it exits 0.
pub fn measure(cmd: &mut Command) -> Result<Measured, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    let reader = |r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let (mut s, mut times) = (String::new(), Vec::new());
            let mut r = std::io::BufReader::new(r);
            while matches!(r.read_line(&mut s), Ok(n) if n > 0) {
                times.push(start.elapsed());
            }
            (s, times)
        })
    };
    let out = reader(Box::new(child.stdout.take().ok_or("no stdout")?));
    let err = reader(Box::new(child.stderr.take().ok_or("no stderr")?));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    let (stdout, line_times) = out.join().unwrap_or_default();
    let (stderr, _) = err.join().unwrap_or_default();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!(
            "{cmd:?} failed (wait status {status}): {}",
            stderr.trim()
        ));
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Measured {
        wall,
        max_rss_kib: usage.ru_maxrss as u64,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        stdout,
        line_times,
    })
}

/// The median (the upper one of an even count).
pub fn median(times: impl IntoIterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = times.into_iter().collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// `target/release/deploy`, beside the running benchmark.
pub fn deploy_binary() -> Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let deploy = exe.with_file_name("deploy");
    if !deploy.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p deploy-cli first",
            deploy.display()
        ));
    }
    Ok(deploy)
}

/// Everything a method needs about the closure.
pub struct Closure {
    /// The shape's name.
    pub shape: String,
    /// The root store path.
    pub root: String,
    /// Its closure, as `nix-store -qR` lists it.
    pub paths: Vec<String>,
    /// The sum of the paths' NAR sizes.
    pub nar_bytes: u64,
    /// The size of `nix-store --export` of the closure.
    pub export_bytes: u64,
}

/// Builds `tests/fixtures/real-closure.nix` in `shape` (salted) and
/// measures its closure (which also warms the page cache).
pub fn real_closure(salt: &str, shape: &str) -> Result<Closure, String> {
    let expr = test_support::repo_root().join("tests/fixtures/real-closure.nix");
    eprintln!("building {} (salt {salt}, shape {shape}) …", expr.display());
    let mut cmd = Command::new("nix-build");
    cmd.arg(&expr)
        .args(["--no-out-link", "--option", "substituters", ""])
        .args(["--max-jobs", "6", "--argstr", "salt", salt])
        .args(["--argstr", "shape", shape]);
    let root = measure(&mut cmd)?.stdout.trim().to_owned();
    let paths: Vec<String> = measure(Command::new("nix-store").args(["-qR", &root]))?
        .stdout
        .lines()
        .map(str::to_owned)
        .collect();
    let sizes = measure(
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
    let script = "set -o pipefail; nix-store --export $(nix-store -qR \"$1\") | wc -c";
    let export = measure(Command::new("bash").args(["-c", script, "bash", &root]))?;
    let export_bytes = export
        .stdout
        .trim()
        .parse()
        .map_err(|_| format!("bad wc output {}", export.stdout))?;
    Ok(Closure {
        shape: shape.to_owned(),
        root,
        paths,
        nar_bytes,
        export_bytes,
    })
}
