//! The measured ways of moving a closure to a node, each a child process
//! timed wall-clock (with its peak RSS from `wait4`), and the checks of
//! what each left on the node.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_cluster::{Cluster, Node};

/// What we measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Our engine, `CopyOptions::default()` (4 connections).
    Ours,
    /// Our engine with one connection.
    OursJobs1,
    /// `nix copy --to ssh-ng://node` (the host's Nix 2.8).
    NixCopy,
    /// `nix-store --export CLOSURE | ssh node 'wc -c'`: the bytes through
    /// OpenSSH to nowhere.
    RawPipe,
    /// `nix-store --export CLOSURE | ssh node nix-store --import`.
    RawImport,
    /// Our engine over an SSH connection with `Compression yes` (zlib).
    OursCompressed,
    /// `nix copy` with `NIX_SSHOPTS` adding `-C` (zlib).
    NixCopyCompressed,
    /// Diagnostic: our NAR encoder through one deploy-ssh channel into
    /// `wc -c` (our transport without the Nix daemon).
    OursPipe,
}

impl Method {
    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Method::Ours => "ours (jobs=4, default)",
            Method::OursJobs1 => "ours (jobs=1)",
            Method::NixCopy => "nix copy --to ssh-ng",
            Method::RawPipe => "export | ssh wc -c",
            Method::RawImport => "export | ssh nix-store --import",
            Method::OursPipe => "ours: NARs | deploy-ssh wc -c",
            Method::OursCompressed => "ours, Compression yes",
            Method::NixCopyCompressed => "nix copy, NIX_SSHOPTS -C",
        }
    }
}

/// One finished child process.
pub struct Measured {
    /// Wall-clock from spawn to exit.
    pub wall: Duration,
    /// Peak resident set of the child or of one of the descendants it
    /// waited for (Linux's `wait4` semantics), KiB.
    pub max_rss_kib: u64,
    /// CPU time (user + system) of the child and the descendants it waited
    /// for: this machine's side only, never the node's.
    pub cpu: Duration,
    /// Its stdout.
    pub stdout: String,
}

/// Runs `cmd` to completion; fails with its stderr unless it exits 0.
pub fn measure(cmd: &mut Command) -> Result<Measured, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
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
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
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
    })
}

/// Everything a method needs about the closure.
pub struct Closure {
    /// The root store path.
    pub root: String,
    /// Its closure, as `nix-store -qR` lists it.
    pub paths: Vec<String>,
    /// The sum of the paths' NAR sizes.
    pub nar_bytes: u64,
    /// The size of `nix-store --export` of the closure.
    pub export_bytes: u64,
}

/// Moves `closure` to `node` by `method`; returns the measurement.
pub fn copy(
    method: Method,
    cluster: &Cluster,
    node: &Node,
    closure: &Closure,
) -> Result<Measured, String> {
    let config = cluster.ssh_config();
    match method {
        Method::Ours => ours(config, node, 4, &closure.root),
        Method::OursJobs1 => ours(config, node, 1, &closure.root),
        Method::NixCopy => nix_copy(config, node, &closure.root, false),
        Method::NixCopyCompressed => nix_copy(config, node, &closure.root, true),
        Method::OursCompressed => {
            let compressed = config.with_extension("compressed");
            let text = std::fs::read_to_string(config).map_err(|e| e.to_string())?;
            std::fs::write(&compressed, format!("Host *\n  Compression yes\n{text}"))
                .map_err(|e| e.to_string())?;
            ours(&compressed, node, 4, &closure.root)
        }
        Method::OursPipe => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut cmd = Command::new(exe);
            cmd.arg("--one-pipe")
                .arg(config)
                .args([node.name(), &closure.root]);
            measure(&mut cmd)
        }
        Method::RawPipe | Method::RawImport => {
            let remote = if method == Method::RawPipe {
                "wc -c"
            } else {
                "nix-store --import >/dev/null"
            };
            let script = "set -o pipefail; nix-store --export $(nix-store -qR \"$1\") | \
                          ssh -F \"$2\" \"$3\" \"$4\"";
            let mut cmd = Command::new("bash");
            cmd.args(["-c", script, "bash", &closure.root])
                .arg(config)
                .args([node.name(), remote]);
            measure(&mut cmd)
        }
    }
}

/// Our engine, in a child process (this binary's `--one-copy`).
pub fn ours(config: &Path, node: &Node, jobs: usize, root: &str) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("--one-copy")
        .arg(config)
        .args([node.name(), &jobs.to_string(), root]);
    measure(&mut cmd)
}

/// `nix copy --to ssh-ng://NODE --no-check-sigs ROOT`.
pub fn nix_copy(
    config: &Path,
    node: &Node,
    root: &str,
    compress: bool,
) -> Result<Measured, String> {
    let mut cmd = Command::new("nix");
    cmd.args(["--extra-experimental-features", "nix-command"])
        .args(["copy", "--no-check-sigs", "--option", "substituters", ""])
        .arg("--to")
        .arg(format!("ssh-ng://{}", node.name()))
        .arg(root)
        .env(
            "NIX_SSHOPTS",
            format!(
                "-F {}{}",
                config.display(),
                if compress { " -C" } else { "" }
            ),
        );
    measure(&mut cmd)
}

/// Checks what `method` left: the byte count through the raw pipe, or a
/// store on the node that verifies with `--check-contents` and holds the
/// whole closure.
pub fn check(method: Method, m: &Measured, node: &Node, closure: &Closure) -> Result<(), String> {
    if matches!(method, Method::RawPipe | Method::OursPipe) {
        let got: u64 = m.stdout.trim().parse().unwrap_or(0);
        let want = if method == Method::RawPipe {
            closure.export_bytes
        } else {
            closure.nar_bytes
        };
        if got != want {
            return Err(format!("the pipe moved {got} bytes, not {want}"));
        }
        return Ok(());
    }
    if matches!(
        method,
        Method::Ours | Method::OursJobs1 | Method::OursCompressed
    ) {
        let sent: usize = first_field(&m.stdout);
        if sent != closure.paths.len() {
            return Err(format!(
                "ours sent {sent} paths, not {} (was the node empty?)",
                closure.paths.len()
            ));
        }
    }
    verify(node, closure)
}

/// `nix-store --verify --check-contents` on the node, and the closure of
/// the root there.
pub fn verify(node: &Node, closure: &Closure) -> Result<(), String> {
    let out = node
        .run("nix-store --verify --check-contents 2>&1")
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("error") || text.contains("modified") {
        return Err(format!("{}: verify failed: {text}", node.name()));
    }
    let listed = node
        .run_ok(&format!("nix-store -qR {} | wc -l", closure.root))
        .map_err(|e| e.to_string())?;
    let n: usize = first_field(&listed);
    if n != closure.paths.len() {
        return Err(format!(
            "{}: {n} paths in the closure, not {}",
            node.name(),
            closure.paths.len()
        ));
    }
    Ok(())
}

fn first_field<T: std::str::FromStr + Default>(s: &str) -> T {
    s.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or_default()
}
