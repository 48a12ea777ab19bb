//! The steps run on the node, as the official multi-user installer does
//! them, each one shell script over an SSH exec channel (only sh, coreutils,
//! tar and the shadow tools of a bare Debian are needed) and each skipping
//! what is already done.

use deploy_ssh::SshSession;
use nix_wire::StorePath;

use deploy_remote::{node_name, quote, run_with, CommandError, Limits};

use super::InstallError;

/// The build users' group, as the official installer names it.
pub const BUILD_GROUP: &str = "nixbld";
/// How many build users, as the official installer makes.
pub const BUILD_USERS: usize = 32;
/// The profile holding the installed Nix.
pub const DEFAULT_PROFILE: &str = "/nix/var/nix/profiles/default";
/// Where the store paths are unpacked before being moved into the store
/// (same filesystem, so each move is one rename).
const STAGING: &str = "/nix/.nix-deploy-unpack";
/// Where Nix's commands are linked, on every PATH sshd gives.
const BIN_LINKS: &str = "/usr/local/bin";
/// Our nix-daemon unit.
const UNIT_PATH: &str = "/etc/systemd/system/nix-daemon.service";

/// Where the daemon's socket lives.
const SOCKET_DIR: &str = "/nix/var/nix/daemon-socket";

/// The unit that runs the installed daemon (it makes its own socket).
pub const DAEMON_UNIT: &str = "\
[Unit]
Description=Nix Daemon (installed by nix-deploy)
RequiresMountsFor=/nix/store
RequiresMountsFor=/nix/var
ConditionPathIsReadWrite=/nix/var/nix/daemon-socket

[Service]
ExecStart=@/nix/var/nix/profiles/default/bin/nix-daemon nix-daemon --daemon
KillMode=process
LimitNOFILE=1048576
TasksMax=1048576

[Install]
WantedBy=multi-user.target
";

/// Runs `script` on the node, with `stdin` if given; its stdout, or an
/// error naming `step`.
pub(super) async fn run(
    session: &SshSession,
    step: &'static str,
    script: &str,
    stdin: Option<&[u8]>,
) -> Result<String, InstallError> {
    let input = stdin.unwrap_or_default();
    let out = run_with(session, step, script, input, Limits::DEFAULT)
        .await
        .map_err(|e| match e {
            CommandError::Failed {
                node,
                status,
                stderr,
                ..
            } => InstallError::Command {
                node,
                step,
                status,
                stderr,
            },
            CommandError::Ssh(e) => InstallError::Ssh(e),
            other => InstallError::Unexpected {
                node: node_name(session),
                step,
                output: other.to_string(),
            },
        })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What the node has before installing.
pub(super) struct Probe {
    /// Whether we are root there.
    pub root: bool,
    /// Whether systemd runs the node.
    pub systemd: bool,
    /// The closure's paths already in `/nix/store` and valid in the
    /// node's Nix database (as a Nix already there says).
    pub present: Vec<String>,
    /// The closure's paths in `/nix/store` that no Nix database vouches
    /// for (left by an interrupted install, or a removed database): their
    /// content is unknown, so they are replaced, never registered as they
    /// are.
    pub unverified: Vec<String>,
}

/// Asks for uid, systemd and which of `paths` exist in the store, and
/// whether a Nix on the node holds them valid.
pub(super) async fn probe(
    session: &SshSession,
    paths: &[&StorePath],
) -> Result<Probe, InstallError> {
    let names = words(paths.iter().map(|p| p.base_name()));
    let script = format!(
        "id -u; if [ -d /run/systemd/system ]; then echo systemd; else echo none; fi; \
         n=; for c in \"$(command -v nix-store 2>/dev/null)\" /nix/var/nix/profiles/default/bin/nix-store; do \
         if [ -n \"$c\" ] && [ -x \"$c\" ] && [ -e /nix/var/nix/db/db.sqlite ]; then n=$c; break; fi; done; \
         if cd /nix/store 2>/dev/null; then for p in {names}; do \
         if [ -e \"$p\" ] || [ -L \"$p\" ]; then \
         if [ -n \"$n\" ] && \"$n\" --check-validity \"/nix/store/$p\" >/dev/null 2>&1; \
         then echo \"valid $p\"; else echo \"unverified $p\"; fi; fi; done; fi"
    );
    let out = run(session, "inspecting the node", &script, None).await?;
    let mut lines = out.lines();
    let (Some(uid), Some(systemd)) = (lines.next(), lines.next()) else {
        return Err(InstallError::Unexpected {
            node: node_name(session),
            step: "inspecting the node",
            output: out.clone(),
        });
    };
    let (mut present, mut unverified) = (Vec::new(), Vec::new());
    for line in lines {
        match line.split_once(' ') {
            Some(("valid", p)) => present.push(p.to_owned()),
            Some(("unverified", p)) => unverified.push(p.to_owned()),
            _ => {
                return Err(InstallError::Unexpected {
                    node: node_name(session),
                    step: "inspecting the node",
                    output: out.clone(),
                })
            }
        }
    }
    Ok(Probe {
        root: uid.trim() == "0",
        systemd: systemd == "systemd",
        present,
        unverified,
    })
}

/// Removes `names` from `/nix/store` (paths no database vouches for, about
/// to be replaced).
pub(super) async fn remove_unverified(
    session: &SshSession,
    names: &[String],
) -> Result<(), InstallError> {
    let script = format!(
        "set -e; cd /nix/store; for p in {}; do chmod -R u+w \"$p\" 2>/dev/null || true; rm -rf \"$p\"; done",
        words(names.iter().map(String::as_str))
    );
    run(session, "removing unverified store paths", &script, None)
        .await
        .map(drop)
}

/// The build group and users and Nix's directories; the number of users
/// created.
pub(super) async fn setup(session: &SshSession) -> Result<usize, InstallError> {
    let dirs = words(
        [
            "/nix",
            "/nix/var",
            "/nix/var/log",
            "/nix/var/log/nix",
            "/nix/var/log/nix/drvs",
            "/nix/var/nix",
            "/nix/var/nix/db",
            "/nix/var/nix/gcroots",
            "/nix/var/nix/gcroots/per-user",
            "/nix/var/nix/profiles",
            "/nix/var/nix/profiles/per-user",
            "/nix/var/nix/temproots",
            "/nix/var/nix/userpool",
            "/nix/var/nix/daemon-socket",
        ]
        .into_iter(),
    );
    let script = format!(
        "set -e; g={BUILD_GROUP}; \
         getent group $g >/dev/null || groupadd --system $g; \
         i=1; while [ $i -le {BUILD_USERS} ]; do u=$g$i; \
         if ! getent passwd $u >/dev/null; then \
         useradd --home-dir /var/empty --comment \"Nix build user $i\" --gid $g --groups $g \
         --no-user-group --system --shell /usr/sbin/nologin --password '!' $u; echo $u; fi; \
         i=$((i + 1)); done; \
         for d in {dirs}; do [ -d $d ] || install -d -m 0755 $d; done; \
         [ -d /nix/store ] || install -d -m 1775 -g $g /nix/store"
    );
    let out = run(session, "creating the build users and /nix", &script, None).await?;
    Ok(out.lines().count())
}

/// The command that unpacks the tar stream on its stdin into the staging
/// directory (emptied first: a failed run may have left it).
pub(super) fn unpack_command() -> String {
    format!(
        "set -e; umask 022; s={STAGING}; \
         if [ -e $s ]; then chmod -R u+w $s; rm -rf $s; fi; mkdir -m 0700 $s; \
         exec tar -x --numeric-owner -C $s -f -"
    )
}

/// Moves the unpacked `paths` into the store, one rename each.
pub(super) async fn commit(session: &SshSession, paths: &[&StorePath]) -> Result<(), InstallError> {
    let names = words(paths.iter().map(|p| p.base_name()));
    let script = format!(
        "set -e; s={STAGING}; for p in {names}; do mv -T \"$s/$p\" \"/nix/store/$p\"; done; \
         rmdir $s"
    );
    run(
        session,
        "moving the unpacked paths into /nix/store",
        &script,
        None,
    )
    .await
    .map(drop)
}

/// Which of `paths` the node's store does not consider valid, asked with
/// the unpacked Nix.
pub(super) async fn invalid_paths(
    session: &SshSession,
    nix: &StorePath,
    paths: &[&StorePath],
) -> Result<Vec<String>, InstallError> {
    let script = format!(
        "{}/bin/nix-store --check-validity --print-invalid {}",
        quote(&nix.to_absolute()),
        words(paths.iter().map(|p| p.to_absolute()))
    );
    let out = run(
        session,
        "checking which paths are registered",
        &script,
        None,
    )
    .await?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Registers paths with `nix-store --load-db`, fed `reginfo`.
pub(super) async fn load_db(
    session: &SshSession,
    nix: &StorePath,
    reginfo: &str,
) -> Result<(), InstallError> {
    let script = format!("{}/bin/nix-store --load-db", quote(&nix.to_absolute()));
    run(
        session,
        "registering the paths (nix-store --load-db)",
        &script,
        Some(reginfo.as_bytes()),
    )
    .await
    .map(drop)
}

/// Installs `nix` into the default profile unless there is one; whether
/// it was created.
pub(super) async fn default_profile(
    session: &SshSession,
    nix: &StorePath,
) -> Result<bool, InstallError> {
    let n = quote(&nix.to_absolute());
    let script = format!(
        "p={DEFAULT_PROFILE}; if [ -e $p ] || [ -L $p ]; then exit 0; fi; \
         {n}/bin/nix-env --profile $p --install {n} && echo created"
    );
    let out = run(session, "setting up the default profile", &script, None).await?;
    Ok(out.trim() == "created")
}

/// Links each of the package's commands into `/usr/local/bin` (through the
/// default profile) where that name is free; the names linked.
pub(super) async fn link_commands(
    session: &SshSession,
    nix: &StorePath,
) -> Result<Vec<String>, InstallError> {
    let script = format!(
        "set -e; mkdir -p {BIN_LINKS}; for f in {n}/bin/*; do [ -e \"$f\" ] || continue; \
         c=${{f##*/}}; t={BIN_LINKS}/$c; \
         if [ -e \"$t\" ] || [ -L \"$t\" ]; then continue; fi; \
         if [ -e {DEFAULT_PROFILE}/bin/$c ]; then ln -s {DEFAULT_PROFILE}/bin/$c \"$t\"; \
         else ln -s \"$f\" \"$t\"; fi; echo \"$c\"; done",
        n = quote(&nix.to_absolute())
    );
    let out = run(
        session,
        "linking Nix's commands into /usr/local/bin",
        &script,
        None,
    )
    .await?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// What the nix-daemon service step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonService {
    /// The node does not run systemd: nothing was set up; commands open
    /// the store directly (root) and `nix-daemon --stdio` serves deploys.
    NoSystemd,
    /// Our unit was there and the daemon was running.
    Running,
    /// Our unit was there; the daemon was (re)started.
    Started,
    /// The unit was written (or changed), enabled and (re)started.
    Installed,
}

/// Writes our unit if it differs, enables it, and (re)starts the daemon
/// when the unit or `restart` says so, or when it is not running.
pub(super) async fn daemon_service(
    session: &SshSession,
    restart: bool,
) -> Result<DaemonService, InstallError> {
    // `restart` returns once the daemon is forked, before it listens: wait
    // for its socket (the unit's condition wants the socket's directory).
    let script = format!(
        "set -e; mkdir -p {SOCKET_DIR}; \
         start() {{ systemctl restart nix-daemon.service; i=0; \
         while [ ! -S {SOCKET_DIR}/socket ]; do i=$((i+1)); \
         if [ $i -gt 100 ]; then systemctl status --no-pager nix-daemon.service >&2 || true; \
         echo 'nix-daemon.service did not open its socket within 10 s' >&2; exit 1; fi; \
         sleep 0.1; done; }}; \
         u={UNIT_PATH}; t=$u.nix-deploy-tmp; cat > $t; \
         if cmp -s $t $u; then rm -f $t; else chmod 644 $t; mv -f $t $u; \
         systemctl daemon-reload; systemctl enable --quiet nix-daemon.service; \
         start; echo installed; exit 0; fi; \
         if [ {restart} = 1 ] || ! systemctl is-active --quiet nix-daemon.service; then \
         start; echo started; else echo running; fi",
        restart = u8::from(restart)
    );
    let out = run(
        session,
        "setting up the nix-daemon service",
        &script,
        Some(DAEMON_UNIT.as_bytes()),
    )
    .await?;
    match out.trim() {
        "installed" => Ok(DaemonService::Installed),
        "started" => Ok(DaemonService::Started),
        "running" => Ok(DaemonService::Running),
        other => Err(InstallError::Unexpected {
            node: node_name(session),
            step: "setting up the nix-daemon service",
            output: other.to_owned(),
        }),
    }
}

/// Shell words, quoted, separated by spaces.
fn words<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    items
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}
