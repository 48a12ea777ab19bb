//! The k3s stage's commands on a node, over its SSH session: what is
//! installed, the token's way from the server to a joining node (stdout to
//! stdin, never argv), running the install script, and the waits.

use std::time::{Duration, Instant};

use deploy_ssh::SshSession;

use super::plan::{InstallPlan, SERVER_TOKEN_PATH, STATE_FILE, TOKEN_FILE};
use super::secret::Secret;
use super::K3sError;
use deploy_remote::{quote, run, CommandError, Limits};

/// The longest one poll of [`wait_for`] may take (a `kubectl` against an
/// API server that doesn't answer waits forever otherwise).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a node has now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Store path of the profile's k3s.
    pub k3s: String,
    /// Store path of the profile's install script.
    pub script: String,
    /// The fingerprint of the last install, if any.
    pub fingerprint: Option<String>,
    /// Whether the unit runs.
    pub active: bool,
}

/// Reads what `plan`'s node has, in one round trip; checks we are root
/// and the profile has k3s and the install script.
pub async fn probe(session: &SshSession, plan: &InstallPlan) -> Result<Installed, K3sError> {
    let bin = format!("{}/bin/k3s", plan.profile_path);
    let command = format!(
        "{path}; export PATH; line() {{ printf '%s\\n' \"$1\"; }}; id -u; \
         line \"$(readlink -f {bin})\"; line \"$(readlink -f {script})\"; \
         line \"$(cat {state} 2>/dev/null)\"; line \"$(systemctl is-active {svc} 2>/dev/null)\"",
        path = plan.path_prefix(),
        bin = quote(&bin),
        script = quote(&plan.script()),
        state = STATE_FILE,
        svc = plan.service,
    );
    let out = run(session, command).await?;
    let mut lines = out.lines().map(str::trim);
    let mut next = || lines.next().unwrap_or_default().to_owned();
    let (uid, k3s, script, fingerprint, active) = (next(), next(), next(), next(), next());
    let node = plan.node.clone();
    if uid != "0" {
        return Err(K3sError::NotRoot { node });
    }
    if k3s.is_empty() || !k3s.starts_with("/nix/store/") {
        return Err(K3sError::NoK3s { node, path: bin });
    }
    if script.is_empty() || !script.starts_with("/nix/store/") {
        return Err(K3sError::NoInstallScript {
            node,
            path: plan.script(),
        });
    }
    Ok(Installed {
        k3s,
        script,
        fingerprint: (!fingerprint.is_empty()).then_some(fingerprint),
        active: active == "active",
    })
}

/// Runs the install script and restarts the unit, then records
/// `fingerprint` as what is installed.
pub async fn install(
    session: &SshSession,
    plan: &InstallPlan,
    fingerprint: &str,
) -> Result<(), K3sError> {
    let command = format!(
        "set -e; {install}; {path} systemctl restart {svc}; \
         mkdir -p {dir}; printf '%s\\n' {fp} > {state}.new; mv {state}.new {state}",
        install = plan.install_command(),
        path = plan.path_prefix(),
        svc = plan.service,
        dir = STATE_FILE.rsplit_once('/').map_or("/", |(d, _)| d),
        fp = quote(fingerprint),
        state = STATE_FILE,
    );
    run(session, command).await?;
    Ok(())
}

/// Reads the join token from the server.
pub async fn read_token(server: &SshSession, server_name: &str) -> Result<Secret, K3sError> {
    let token = match run(server, format!("cat {SERVER_TOKEN_PATH}")).await {
        Ok(text) => Secret::new(&text),
        // Missing or unreadable: said below, as a missing token.
        Err(CommandError::Failed { .. }) => Secret::new(""),
        Err(e) => return Err(e.into()),
    };
    if token.is_empty() {
        return Err(K3sError::NoToken {
            server: server_name.to_owned(),
            path: SERVER_TOKEN_PATH,
        });
    }
    Ok(token)
}

/// Writes the token to [`TOKEN_FILE`] (mode 0600) through stdin; whether
/// the file changed.
pub async fn write_token(session: &SshSession, token: &Secret) -> Result<bool, K3sError> {
    let content = format!("{}\n", token.expose());
    Ok(
        deploy_remote::file::write_if_changed(session, TOKEN_FILE, 0o600, content.as_bytes())
            .await?,
    )
}

/// Whether `session`'s node opens a TCP connection to `host:port` within
/// five seconds.
pub async fn can_reach(session: &SshSession, host: &str, port: u16) -> Result<bool, K3sError> {
    // The inventory's hostnames are validated; quoted all the same, since
    // this program is a shell's (bash's) inside the outer command.
    let probe = format!("exec 3<>/dev/tcp/{}/{port}", quote(host));
    let command = format!("timeout 5 bash -c {}", quote(&probe));
    let limits = Limits::DEFAULT.with_timeout(Duration::from_secs(15));
    Ok(deploy_remote::probe(session, &command, limits)
        .await?
        .status
        .success())
}

/// Runs `command` until its trimmed stdout is `want`, every `poll`, for at
/// most `timeout` (each run too, and no run longer than [`POLL_TIMEOUT`]);
/// on timeout, the last thing it said.
pub async fn wait_for(
    session: &SshSession,
    command: &str,
    want: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed()).min(POLL_TIMEOUT);
        let limits = Limits::DEFAULT.with_timeout(left.max(Duration::from_secs(1)));
        let last = match deploy_remote::probe(session, command, limits).await {
            Ok(out) if out.status.success() && out.stdout == want => return Ok(()),
            Ok(out) if out.stderr.is_empty() => format!("{:?} ({})", out.stdout, out.status),
            Ok(out) => format!("{} ({})", out.stderr, out.status),
            Err(e) => e.to_string(),
        };
        if start.elapsed() + poll > timeout {
            return Err(last);
        }
        tokio::time::sleep(poll).await;
    }
}
