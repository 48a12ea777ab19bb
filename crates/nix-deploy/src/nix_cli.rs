//! Running the `nix` command on the deploying machine: evaluating flake
//! attributes as JSON and building many installables in one invocation.
//!
//! Every invocation passes `--extra-experimental-features 'nix-command
//! flakes'`, so the same calls work with Debian 12's Nix 2.8 (where both
//! features are experimental) and with newer Nix. Failures keep the command
//! line and Nix's stderr exactly as Nix printed them; only their display
//! strips terminal colour codes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::process::Stdio;

use nix_wire::StorePath;
use serde::Deserialize;
use tokio::process::Command;

/// The flag value that turns on what we use in every Nix version.
pub const EXPERIMENTAL_FEATURES: &str = "nix-command flakes";

/// How to run `nix` against one flake.
#[derive(Debug, Clone)]
pub struct NixCli {
    /// The flake reference, e.g. `path:/srv/cluster` or `.`; attributes are
    /// appended as `FLAKE#attr`.
    pub flake: String,
    /// Passed through after the subcommand's own arguments, e.g.
    /// `--override-input nixpkgs path:…` or `--option substituters ''`.
    pub extra_args: Vec<String>,
    /// The program to run (default `nix`, looked up on `PATH`).
    pub program: OsString,
    /// Arguments put before `nix`'s own, when `program` is a wrapper that
    /// takes the command to run (e.g. `tests/peers/nix-2.26 nix`).
    pub program_args: Vec<OsString>,
    /// Environment variables set for the child (on top of ours).
    pub env: Vec<(OsString, OsString)>,
}

/// One entry of `nix build --json`: a derivation and its built outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    /// The derivation built (absent when the installable was a plain store
    /// path rather than a derivation).
    pub drv_path: Option<StorePath>,
    /// Output name (`out`, …) to the store path it produced.
    pub outputs: BTreeMap<String, StorePath>,
}

/// Why a `nix` invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    /// The `nix` program is not installed (not on `PATH`).
    #[error("nix not found on PATH: install Nix (apt-get install nix-bin)")]
    NotInstalled {
        /// The command line we tried to run.
        command: String,
    },
    /// `nix` could not be started for another reason.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// `nix` ran and failed; `stderr` is its message, byte for byte.
    #[error("`{command}` failed ({status}):\n{}", nix_wire::daemon::strip_ansi(stderr).trim_end())]
    Failed {
        /// The command line.
        command: String,
        /// How it exited, e.g. `exit status: 1`.
        status: String,
        /// Everything Nix wrote to stderr, untouched.
        stderr: String,
    },
    /// `nix` succeeded but printed something we cannot read.
    #[error("`{command}` printed output we cannot read: {reason}")]
    BadOutput {
        /// The command line.
        command: String,
        /// What is wrong with it.
        reason: String,
        /// What it printed on stdout.
        stdout: String,
    },
}

impl NixError {
    /// Nix's own error text (stderr), if Nix ran and failed.
    pub fn nix_stderr(&self) -> Option<&str> {
        match self {
            NixError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// The shape of one `nix build --json` entry (Nix 2.8 through 2.26 print
/// `drvPath` and `outputs`; newer ones add timing fields, ignored here; a
/// plain store path installable gives `path`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBuildResult {
    drv_path: Option<String>,
    #[serde(default)]
    outputs: BTreeMap<String, String>,
    path: Option<String>,
}

impl NixCli {
    /// `nix` from `PATH`, for `flake`, with no extra arguments.
    pub fn new(flake: impl Into<String>) -> Self {
        NixCli {
            flake: flake.into(),
            extra_args: Vec::new(),
            program: "nix".into(),
            program_args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds arguments passed through to every invocation.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `FLAKE#attr`, the installable for a flake attribute path.
    pub fn installable(&self, attr: &str) -> String {
        format!("{}#{}", self.flake, attr)
    }

    /// `nix eval --json FLAKE#attr`: the attribute's value as JSON (a
    /// derivation appears as its output path).
    pub async fn eval_json(&self, attr: &str) -> Result<serde_json::Value, NixError> {
        let installable = self.installable(attr);
        let (command, stdout) = self.run_raw(&["eval", "--json", &installable]).await?;
        serde_json::from_str(&stdout).map_err(|e| NixError::BadOutput {
            command,
            reason: format!("not JSON: {e}"),
            stdout,
        })
    }

    /// Builds all `installables` in one `nix build --no-link --json`
    /// invocation, so Nix evaluates the flake once and builds in parallel.
    /// An empty list builds nothing (and does not run Nix).
    pub async fn build(&self, installables: &[String]) -> Result<Vec<BuildResult>, NixError> {
        if installables.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["build", "--no-link", "--json"];
        args.extend(installables.iter().map(String::as_str));
        let (command, stdout) = self.run_raw(&args).await?;
        parse_build_json(&stdout).map_err(|reason| NixError::BadOutput {
            command,
            reason,
            stdout,
        })
    }

    /// Runs `nix ARGS… EXTRA_ARGS…` (with the experimental-feature flag) and
    /// returns its stdout.
    pub async fn run(&self, args: &[&str]) -> Result<String, NixError> {
        self.run_raw(args).await.map(|(_, stdout)| stdout)
    }

    /// Runs Nix, returning the command line (for errors) and stdout.
    async fn run_raw(&self, args: &[&str]) -> Result<(String, String), NixError> {
        let mut argv: Vec<OsString> = self.program_args.clone();
        argv.push("--extra-experimental-features".into());
        argv.push(EXPERIMENTAL_FEATURES.into());
        argv.extend(args.iter().map(OsString::from));
        argv.extend(self.extra_args.iter().map(OsString::from));
        let command = command_line(&self.program, &argv);

        let mut cmd = Command::new(&self.program);
        cmd.args(&argv)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = match cmd.output().await {
            Ok(output) => output,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(NixError::NotInstalled { command })
            }
            Err(source) => return Err(NixError::Spawn { command, source }),
        };
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(NixError::Failed {
                command,
                status: output.status.to_string(),
                stderr,
            });
        }
        match String::from_utf8(output.stdout) {
            Ok(stdout) => Ok((command, stdout)),
            Err(e) => Err(NixError::BadOutput {
                command,
                reason: "not UTF-8".into(),
                stdout: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        }
    }
}

/// Parses what `nix build --json` prints.
fn parse_build_json(stdout: &str) -> Result<Vec<BuildResult>, String> {
    let raw: Vec<RawBuildResult> = serde_json::from_str(stdout)
        .map_err(|e| format!("not a JSON list of build results: {e}"))?;
    raw.into_iter()
        .map(|r| {
            let parse = |p: &str| StorePath::parse(p).map_err(|e| e.to_string());
            let drv_path = r.drv_path.as_deref().map(parse).transpose()?;
            let mut outputs = BTreeMap::new();
            for (name, path) in &r.outputs {
                outputs.insert(name.clone(), parse(path)?);
            }
            if let Some(path) = &r.path {
                outputs.insert("out".into(), parse(path)?);
            }
            Ok(BuildResult { drv_path, outputs })
        })
        .collect()
}

/// The command line as a shell would take it back (for messages).
fn command_line(program: &OsString, args: &[OsString]) -> String {
    std::iter::once(program)
        .chain(args)
        .map(|a| deploy_remote::quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for BuildResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.drv_path {
            Some(drv) => write!(f, "{drv}")?,
            None => write!(f, "(no derivation)")?,
        }
        for (name, path) in &self.outputs {
            write!(f, " {name}={path}")?;
        }
        Ok(())
    }
}
