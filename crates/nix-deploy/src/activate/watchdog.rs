//! The safe rollback ("magic rollback"): before the switch, a watchdog is
//! armed on the node that, after the timeout, switches the profile back to
//! the generation current before the deploy, unless the deploy was
//! confirmed first. It survives the SSH session and the deployer's death:
//!
//! - with systemd (`/run/systemd/system` exists and `systemd-run` is on
//!   PATH): a transient timer, `systemd-run --on-active=T --unit=U`;
//! - without: `setsid nohup sh -c 'sleep T; …' &`, detached from the
//!   session (stdio on `/dev/null`, its own session), reparented to init.
//!
//! Each watchdog has a directory `<state dir>/watchdogs/ID` (see
//! `super::PRINT_STATE_DIR`) holding the generation it goes back to
//! (`previous`), its systemd unit (`unit`), and, once the deploy switched,
//! the profile link it guards (`expect`). Whoever acts first, the watchdog
//! at expiry, the deployer confirming or rolling back after a failed stage,
//! or a later deploy superseding it, claims the decision with `mkdir
//! decided` (atomic), so a confirmation racing the timeout is either in
//! time or reported as too late, never both.
//!
//! A watchdog only ever undoes its own deploy:
//! - at expiry it takes the node's lock (see [`super::lock`]) before
//!   deciding, so it never acts in the middle of another deploy (it waits
//!   up to [`LOCK_WAIT`] for another holder, which supersedes it as soon as
//!   it has the lock; it does not wait for the deploy it guards, which is
//!   too late, may hold the lock over a connection that is dead without
//!   the node knowing yet, and switches nothing any more);
//! - it rolls back only if the profile still points at the generation its
//!   deploy switched to;
//! - every deploy that takes the node's lock supersedes the watchdogs left
//!   pending by deployers that died (see [`super::lock::acquire`]), and
//!   inherits the generation they would have gone back to: the last one a
//!   deploy confirmed.
//!
//! A node rebooting before the timeout loses the watchdog (as a transient
//! systemd timer would).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deploy_ssh::SshSession;

use super::generations::switch_command;
use super::lock::{HOLDER_FILE, LOCK_FILE};
use super::{ActivationError, PRINT_STATE_DIR};
use deploy_remote::{node_name, quote, run};

/// How the watchdog runs on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogKind {
    /// A transient systemd timer.
    Systemd,
    /// A detached `sleep` in its own session.
    Detached,
}

/// How long a watchdog at expiry waits for the node's lock before it
/// decides anyway.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

/// An armed watchdog on one node.
#[derive(Debug, Clone)]
pub struct Watchdog {
    dir: String,
    lock: String,
    /// The file naming the lock's holder: our deploy's when armed.
    holder: String,
    unit: String,
    profile: String,
    previous: u64,
    nix_env: String,
    kind: WatchdogKind,
}

/// What became of the watchdog's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The deploy is confirmed; the watchdog will do nothing.
    Confirmed,
    /// The node is back on this generation.
    RolledBack(u64),
    /// A later deploy took the node over before this one was confirmed,
    /// or the profile no longer pointed at this deploy's generation when
    /// the watchdog expired; nothing was rolled back.
    Superseded,
}

fn unique_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", std::process::id())
}

impl Watchdog {
    /// Arms a watchdog that switches `profile` back to generation
    /// `previous` after `timeout` unless confirmed.
    pub async fn arm(
        session: &SshSession,
        profile: &str,
        previous: u64,
        timeout: Duration,
    ) -> Result<Watchdog, ActivationError> {
        let probe = run(
            session,
            format!(
                "command -v nix-env; if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; \
                 then echo systemd; else echo detached; fi; {PRINT_STATE_DIR}"
            ),
        )
        .await?;
        let mut lines = probe.lines();
        let (Some(nix_env), Some(kind), Some(state)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(ActivationError::Unexpected {
                node: node_name(session),
                what: "looking for nix-env, systemd and the state directory".to_owned(),
                output: probe.clone(),
            });
        };
        let id = unique_id();
        let dog = Watchdog {
            dir: format!("{state}/watchdogs/{id}"),
            lock: format!("{state}/{LOCK_FILE}"),
            holder: format!("{state}/{HOLDER_FILE}"),
            unit: format!("nix-deploy-rollback-{id}"),
            profile: profile.to_owned(),
            previous,
            nix_env: nix_env.to_owned(),
            kind: if kind == "systemd" {
                WatchdogKind::Systemd
            } else {
                WatchdogKind::Detached
            },
        };
        let secs = timeout.as_secs().max(1);
        let body = dog.expiry_script();
        let start = match dog.kind {
            WatchdogKind::Systemd => format!(
                "systemd-run --quiet --unit={unit} --on-active={secs}s --timer-property=AccuracySec=100ms /bin/sh -c {body}",
                unit = quote(&dog.unit),
                body = quote(&body)
            ),
            WatchdogKind::Detached => format!(
                "setsid nohup /bin/sh -c {script} </dev/null >/dev/null 2>&1 &",
                script = quote(&format!("sleep {secs}; {body}"))
            ),
        };
        let unit = match dog.kind {
            WatchdogKind::Systemd => format!("; echo {} > unit", quote(&dog.unit)),
            WatchdogKind::Detached => String::new(),
        };
        run(
            session,
            // Not `mkdir && start &`: that would background a subshell
            // holding the channel's stdout until the watchdog ends.
            format!(
                "mkdir -p {dir} && cd {dir} && echo {previous} > previous{unit} && \
                 cat {holder} > holder || exit 1; {start}",
                dir = quote(&dog.dir),
                holder = quote(&dog.holder),
            ),
        )
        .await?;
        Ok(dog)
    }

    /// Records the profile link the switch made current (call it right
    /// after the switch): at expiry the watchdog rolls back only if the
    /// profile still points there. Until then it takes any generation but
    /// `previous` as its deploy's.
    pub async fn record_switch(&self, session: &SshSession) -> Result<(), ActivationError> {
        run(
            session,
            format!(
                "l=$(readlink {profile}) && printf '%s\\n' \"$l\" > {dir}/expect.tmp && mv {dir}/expect.tmp {dir}/expect",
                profile = quote(&self.profile),
                dir = quote(&self.dir)
            ),
        )
        .await?;
        Ok(())
    }

    /// How it runs.
    pub fn kind(&self) -> WatchdogKind {
        self.kind
    }

    /// The generation it goes back to.
    pub fn previous(&self) -> u64 {
        self.previous
    }

    /// What the watchdog does at expiry: take the node's lock (or give up
    /// waiting for it), claim the decision, and roll back if the profile
    /// is still on its deploy's generation.
    fn expiry_script(&self) -> String {
        format!(
            "cd {dir} || exit 0; command exec 9>>{lock} || true; \
             if ! flock -n 9 && [ \"$(cat holder 2>/dev/null)\" != \"$(cat {holder} 2>/dev/null)\" ]; then \
             flock -w {wait} 9 || true; fi; \
             mkdir decided 2>/dev/null || exit 0; \
             now=$(readlink {profile}); \
             if [ -f expect ] && [ \"$now\" != \"$(cat expect)\" ]; then \
             printf 'superseded\\n' > state; printf 'profile on %s, not %s: left alone\\n' \"$now\" \"$(cat expect)\" >>log; exit 0; fi; \
             {rollback} >>log 2>&1; echo 'rolled-back {prev}' > state",
            dir = quote(&self.dir),
            lock = quote(&self.lock),
            holder = quote(&self.holder),
            wait = LOCK_WAIT.as_secs(),
            profile = quote(&self.profile),
            rollback = switch_command(&self.nix_env, &self.profile, self.previous),
            prev = self.previous,
        )
    }

    /// Stops the systemd timer (nothing for the detached kind, which finds
    /// the decision taken when it wakes).
    fn stop_timer(&self) -> String {
        match self.kind {
            WatchdogKind::Systemd => format!(
                "; systemctl stop {}.timer >/dev/null 2>&1",
                quote(&self.unit)
            ),
            WatchdogKind::Detached => String::new(),
        }
    }

    /// Claims the decision and runs `action` if we got it; else prints
    /// the state the watchdog left. Then stops the timer.
    fn claim(&self, action: &str) -> String {
        format!(
            "cd {dir} || exit 3; if mkdir decided 2>/dev/null; then {action}; else cat state; fi{stop}; true",
            dir = quote(&self.dir),
            stop = self.stop_timer(),
        )
    }

    fn decision(&self, session: &SshSession, out: &str) -> Result<Decision, ActivationError> {
        match out.trim() {
            "confirmed" => Ok(Decision::Confirmed),
            "superseded" => Ok(Decision::Superseded),
            s => s
                .strip_prefix("rolled-back ")
                .and_then(|n| n.parse().ok())
                .map(Decision::RolledBack)
                .ok_or_else(|| ActivationError::Unexpected {
                    node: node_name(session),
                    what: format!("reading the watchdog's state in {}", self.dir),
                    output: out.to_owned(),
                }),
        }
    }

    /// Confirms the deploy: call it over a fresh connection, which proves
    /// the node is still reachable. Fails with
    /// [`ActivationError::TooLate`] if the watchdog acted first.
    pub async fn confirm(&self, fresh: &SshSession) -> Result<(), ActivationError> {
        let action = format!(
            "echo confirmed > state; echo confirmed; rm -rf {}",
            quote(&self.dir)
        );
        let out = run(fresh, self.claim(&action)).await?;
        match self.decision(fresh, &out)? {
            Decision::Confirmed => Ok(()),
            Decision::RolledBack(generation) => Err(ActivationError::TooLate {
                node: node_name(fresh),
                generation,
            }),
            Decision::Superseded => Err(ActivationError::Superseded {
                node: node_name(fresh),
            }),
        }
    }

    /// Rolls back now (a later stage failed) and claims the decision, so
    /// the watchdog will do nothing; returns the generation the node is
    /// back on.
    pub async fn roll_back_now(&self, session: &SshSession) -> Result<u64, ActivationError> {
        let action = format!(
            "{rollback} >&2 && echo 'rolled-back {prev}' > state && echo 'rolled-back {prev}'",
            rollback = switch_command(&self.nix_env, &self.profile, self.previous),
            prev = self.previous,
        );
        // Switching back even if the watchdog claimed the decision first
        // (a switch slower than the timeout): the node must end on
        // `previous` whoever decided.
        let out = run(
            session,
            format!(
                "cd {dir} || exit 3; mkdir decided 2>/dev/null{stop}; {action}",
                dir = quote(&self.dir),
                stop = self.stop_timer(),
            ),
        )
        .await?;
        match self.decision(session, &out)? {
            Decision::RolledBack(n) => Ok(n),
            Decision::Confirmed | Decision::Superseded => Err(ActivationError::Unexpected {
                node: node_name(session),
                what: "rolling back a confirmed deploy".to_owned(),
                output: out,
            }),
        }
    }
}
