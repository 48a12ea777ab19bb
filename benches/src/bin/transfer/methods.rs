//! The measured ways of moving a closure to a node, each a child process
//! (ours through the real `deploy` binary), and the checks of what each
//! left on the node.

use std::path::Path;
use std::process::Command;

use benches::{deploy_binary, measure, Closure, Measured};
use serde_json::Value;
use test_cluster::{Cluster, Node};

/// What we measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// `deploy copy` with its defaults (compression `auto`), with the
    /// receiver the flake's package would carry.
    Ours,
    /// `deploy copy --compression no`.
    OursPlain,
    /// `deploy all --goal switch` of a one-node inventory whose profile
    /// holds the closure.
    DeployAll,
    /// `nix copy --to ssh-ng://node` (the host's Nix 2.8).
    NixCopy,
    /// `nix-store --export CLOSURE | ssh node 'wc -c'`: the bytes through
    /// OpenSSH to nowhere.
    Pipe,
}

impl Method {
    /// Parses a `--methods` entry.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "ours" => Method::Ours,
            "ours-plain" => Method::OursPlain,
            "deploy-all" => Method::DeployAll,
            "nix-copy" => Method::NixCopy,
            "pipe" => Method::Pipe,
            _ => return None,
        })
    }

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Method::Ours => "ours (deploy copy, default)",
            Method::OursPlain => "ours, --compression no",
            Method::DeployAll => "ours (deploy all --goal switch)",
            Method::NixCopy => "nix copy --to ssh-ng",
            Method::Pipe => "export | ssh wc -c",
        }
    }
}

/// What one run of a method gave.
pub struct Run {
    /// The child process.
    pub measured: Measured,
    /// The node's CPU time meanwhile (sshd, daemons, receiver), if counted.
    pub node_cpu: Option<std::time::Duration>,
    /// How ours compressed, as its events said (`zstd -3`, `zlib`, `none`).
    pub compression: Option<String>,
}

/// `deploy copy` to `node` with `extra` flags.
pub fn deploy_copy(
    cluster: &Cluster,
    node: &Node,
    root: &str,
    receiver: &str,
    extra: &[&str],
) -> Result<Measured, String> {
    let mut c = Command::new(deploy_binary()?);
    c.args(["copy", "--to", node.name(), "--no-agent", "--json"])
        .arg("--ssh-config")
        .arg(cluster.ssh_config())
        .args(["--receiver", receiver])
        .args(extra)
        .arg(root);
    measure(&mut c)
}

/// `nix copy --to ssh-ng://NODE --no-check-sigs ROOT`.
pub fn nix_copy(config: &Path, node: &Node, root: &str) -> Result<Measured, String> {
    let mut cmd = Command::new("nix");
    cmd.args(["--extra-experimental-features", "nix-command"])
        .args(["copy", "--no-check-sigs", "--option", "substituters", ""])
        .arg("--to")
        .arg(format!("ssh-ng://{}", node.name()))
        .arg(root)
        .env("NIX_SSHOPTS", format!("-F {}", config.display()));
    measure(&mut cmd)
}

/// The raw OpenSSH pipe of the closure's export into `wc -c`.
pub fn pipe(config: &Path, node: &Node, root: &str) -> Result<Measured, String> {
    let script = "set -o pipefail; nix-store --export $(nix-store -qR \"$1\") | \
                  ssh -F \"$2\" \"$3\" 'wc -c'";
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script, "bash", root])
        .arg(config)
        .arg(node.name());
    measure(&mut cmd)
}

/// The JSON lines of ours.
pub fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The last compression method ours reported, with its last zstd level.
pub fn compression(events: &[Value]) -> Option<String> {
    let mut method = None;
    for e in events {
        match e["event"].as_str() {
            Some("compression") => {
                method = Some(match (e["method"].as_str(), e["level"].as_i64()) {
                    (Some(m), Some(l)) => format!("{m} -{l}"),
                    (Some(m), None) => m.to_owned(),
                    _ => "?".to_owned(),
                })
            }
            Some("compressionLevel") => {
                if let Some(l) = e["level"].as_i64() {
                    method = Some(format!("zstd -{l}"));
                }
            }
            _ => {}
        }
    }
    method
}

/// Checks what a copy left: for ours, that it sent the whole closure; for
/// the pipe the byte count; for stores `nix-store --verify
/// --check-contents` on the node and the closure there.
pub fn check(method: Method, m: &Measured, node: &Node, closure: &Closure) -> Result<(), String> {
    match method {
        Method::Pipe => {
            let got: u64 = m.stdout.trim().parse().unwrap_or(0);
            if got != closure.export_bytes {
                return Err(format!(
                    "the pipe moved {got} bytes, not {}",
                    closure.export_bytes
                ));
            }
            return Ok(());
        }
        Method::Ours | Method::OursPlain => {
            let done = events(&m.stdout)
                .into_iter()
                .rfind(|e| e["event"] == "done")
                .ok_or("ours printed no result")?;
            if done["sentPaths"].as_u64() != Some(closure.paths.len() as u64) {
                return Err(format!("ours sent {done} (was the node empty?)"));
            }
        }
        Method::DeployAll | Method::NixCopy => {}
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
    let n: usize = listed.trim().parse().unwrap_or(0);
    if n != closure.paths.len() {
        return Err(format!(
            "{}: {n} paths in the closure, not {}",
            node.name(),
            closure.paths.len()
        ));
    }
    Ok(())
}
