//! Running the external tools the harness drives (`ip`, `tc`, `nsenter`...).

use std::fs;
use std::process::{Command, Output, Stdio};

use crate::error::{io, ClusterError, Result};

/// The command line of `cmd`, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, stdin closed, and returns its output, whatever its status.
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(io(format!("running `{}`", describe(cmd))))
}

/// Runs `cmd` and fails unless it exits with status 0; returns its stdout.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Turns a non-zero exit status in `out` into [`ClusterError::Command`].
pub(crate) fn check(cmd: &Command, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    Err(ClusterError::Command {
        command: describe(cmd),
        status: out.status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
    })
}

/// Builds a [`Command`] from a program and arguments.
pub(crate) fn cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Sends SIGKILL to `pid`; a process already gone is not an error.
pub(crate) fn kill(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Every process with its parent's pid, from /proc.
fn processes() -> Vec<(u32, u32)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // Fields after the parenthesised command name: state, then ppid.
            let ppid = stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?;
            Some((pid, ppid.parse().ok()?))
        })
        .collect()
}

/// The child of process `parent`, if it has one.
pub(crate) fn child_of(parent: u32) -> Option<u32> {
    processes()
        .into_iter()
        .find_map(|(pid, ppid)| (ppid == parent).then_some(pid))
}

/// The pids of the descendants of process `pid` (children, theirs...).
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let all = processes();
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for &(child, ppid) in &all {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}
