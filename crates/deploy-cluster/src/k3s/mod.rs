//! The k3s stage: after a node's profile switch, install k3s from the
//! profile's own binary with k3s's pinned install script (in the profile
//! as `share/k3s/install.sh`, run with `INSTALL_K3S_SKIP_DOWNLOAD`), as a
//! server on the control plane and an agent on workers.
//!
//! Order: servers first; an agent waits until its server's API answers,
//! then joins; every node waits until Kubernetes reports it Ready. The join
//! token goes from the server's file to the agent's 0600 file through SSH
//! stdout and stdin only. A rerun with nothing changed runs neither the
//! script nor a restart; a changed binary or flag restarts that node only.

mod error;
mod gate;
pub mod plan;
mod remote;
pub mod secret;

use std::time::Duration;

use deploy_ssh::{SshOptions, SshSession, Target};

use self::gate::{GateState, Gates};
use self::plan::{InstallPlan, K3sNode, API_PORT, SERVER_TOKEN_PATH, STATE_FILE, TOKEN_FILE};
use nix_deploy::inventory::Role;
use nix_deploy::stage::{Action, Stage, StageContext, StageFuture};

pub use error::K3sError;

/// How long the stage waits, and how often it asks.
#[derive(Debug, Clone, Copy)]
pub struct K3sTimeouts {
    /// For a server's API to answer (`/readyz`), and for an agent's
    /// server to get there.
    pub api: Duration,
    /// For a node to be Ready.
    pub ready: Duration,
    /// Between two questions.
    pub poll: Duration,
}

impl Default for K3sTimeouts {
    fn default() -> Self {
        K3sTimeouts {
            api: Duration::from_secs(300),
            ready: Duration::from_secs(300),
            poll: Duration::from_secs(2),
        }
    }
}

/// The k3s cluster a deploy sets up.
#[derive(Debug)]
pub struct K3sStage {
    nodes: Vec<(K3sNode, Target)>,
    ha: bool,
    ssh: SshOptions,
    timeouts: K3sTimeouts,
    gates: Gates,
}

impl K3sStage {
    /// The stage for a cluster of `nodes` (each with its SSH target),
    /// `deployed` naming the nodes of this deploy; `ssh` is used to reach
    /// a joining node's server.
    pub fn new(
        nodes: Vec<(K3sNode, Target)>,
        ha: bool,
        deployed: &[String],
        ssh: SshOptions,
        timeouts: K3sTimeouts,
    ) -> Self {
        let gates = Gates::new(
            nodes
                .iter()
                .filter(|(n, _)| n.role == Role::Server && deployed.contains(&n.name))
                .map(|(n, _)| n.name.as_str()),
        );
        K3sStage {
            nodes,
            ha,
            ssh,
            timeouts,
            gates,
        }
    }

    /// The server everyone joins: the first server by name.
    fn first_server(&self) -> Option<&(K3sNode, Target)> {
        self.nodes
            .iter()
            .filter(|(n, _)| n.role == Role::Server)
            .min_by(|a, b| a.0.name.cmp(&b.0.name))
    }

    /// The install plan of `name` with the server URL `host` gives, and the
    /// server it joins, if any.
    fn plan(&self, name: &str, server_host: Option<&str>) -> Option<(InstallPlan, Option<String>)> {
        let (node, _) = self.nodes.iter().find(|(n, _)| n.name == name)?;
        let first = self.first_server().map(|(n, _)| n.name.clone());
        let is_first = first.as_deref() == Some(name);
        let joins = !is_first && (node.role == Role::Agent || self.ha);
        let url = server_host.map(|h| format!("https://{h}:{API_PORT}"));
        let join = if joins { url.as_deref() } else { None };
        let plan = InstallPlan::new(node, join, self.ha && is_first);
        Some((plan, if joins { first } else { None }))
    }

    /// Everything the stage would do on `name`, for `--dry-run`.
    pub fn describe(&self, name: &str) -> Vec<Action> {
        let server_host = self.first_server().map(|(_, t)| t.host.clone());
        let Some((plan, joins)) = self.plan(name, server_host.as_deref()) else {
            return Vec::new();
        };
        let t = self.timeouts;
        let mut actions = Vec::new();
        if let Some(server) = &joins {
            actions.push(Action::Wait {
                what: format!("server {server}'s k3s API (its own k3s stage)"),
                timeout_secs: t.api.as_secs(),
            });
            actions.push(Action::Run {
                command: format!("cat {SERVER_TOKEN_PATH}   # on {server}, into memory"),
                when: None,
            });
            actions.push(Action::Write {
                path: TOKEN_FILE.to_owned(),
                mode: 0o600,
                content: format!("<join token of {server}, masked>"),
            });
        }
        let unchanged = "when the k3s binary, the script or these flags changed since the last install, or the unit is not running";
        actions.push(Action::Run {
            command: plan.install_command(),
            when: Some(unchanged.to_owned()),
        });
        actions.push(Action::Run {
            command: format!("{} systemctl restart {}", plan.path_prefix(), plan.service),
            when: Some(unchanged.to_owned()),
        });
        actions.push(Action::Write {
            path: STATE_FILE.to_owned(),
            mode: 0o644,
            content: "<fingerprint of the install>".to_owned(),
        });
        if plan.role == Role::Server && joins.is_none() {
            actions.push(Action::Wait {
                what: format!("{} get --raw=/readyz says ok", plan.kubectl()),
                timeout_secs: t.api.as_secs(),
            });
        }
        actions.push(Action::Wait {
            what: format!("node {name} is Ready (kubectl get node {name}, on the server)"),
            timeout_secs: t.ready.as_secs(),
        });
        actions
    }

    async fn run_node(&self, cx: StageContext<'_>) -> Result<(), K3sError> {
        let name = &cx.node.name;
        let Some(role) = self
            .nodes
            .iter()
            .find(|(n, _)| &n.name == name)
            .map(|(n, _)| n.role)
        else {
            return Ok(());
        };
        let Some((server, server_target)) = self.first_server().cloned() else {
            return Err(K3sError::NoServer { node: name.clone() });
        };
        let say = |m: String| (cx.progress)(m);
        let t = self.timeouts;
        if server.name == *name {
            let (plan, _) = self
                .plan(name, None)
                .ok_or(K3sError::NoServer { node: name.clone() })?;
            let installed = remote::probe(cx.session, &plan).await?;
            self.install_if_changed(cx.session, &plan, installed, false, &say)
                .await?;
            say(format!(
                "waiting for the k3s API (up to {} s)",
                t.api.as_secs()
            ));
            let readyz = format!("{} get --raw=/readyz", plan.kubectl());
            remote::wait_for(cx.session, &readyz, "ok", t.api, t.poll)
                .await
                .map_err(|last| K3sError::ApiTimeout {
                    node: name.clone(),
                    waited: t.api,
                    last,
                })?;
            return self.wait_ready(cx.session, &plan, &server.name, &say).await;
        }
        say(format!(
            "waiting for server {} (up to {} s)",
            server.name,
            t.api.as_secs()
        ));
        // Connecting to the server overlaps the wait for it.
        let (gate, server_session) = tokio::join!(
            self.gates.wait(&server.name, t.api),
            SshSession::connect(&server_target, &self.ssh)
        );
        match gate {
            GateState::Open => {}
            GateState::Failed(reason) => {
                return Err(K3sError::ServerFailed {
                    node: name.clone(),
                    server: server.name.clone(),
                    reason,
                })
            }
            GateState::Pending => {
                return Err(K3sError::ServerTimeout {
                    node: name.clone(),
                    server: server.name.clone(),
                    waited: t.api,
                })
            }
        }
        let server_session = server_session?;
        let result = async {
            let (plan, _) = self
                .plan(name, Some(server_session.host()))
                .ok_or(K3sError::NoServer { node: name.clone() })?;
            let url = plan.join.clone().unwrap_or_default();
            // The agent's reach and the server's token, at once.
            let (reach, token) = tokio::join!(
                remote::can_reach(cx.session, server_session.host(), API_PORT),
                remote::read_token(&server_session, &server.name)
            );
            if !reach? {
                return Err(K3sError::Unreachable {
                    node: name.clone(),
                    url,
                });
            }
            let token = token?;
            // Writing the token and probing the install, at once.
            let (token_changed, installed) = tokio::join!(
                remote::write_token(cx.session, &token),
                remote::probe(cx.session, &plan)
            );
            say(format!("joining {url} as {}", role.as_str()));
            self.install_if_changed(cx.session, &plan, installed?, token_changed?, &say)
                .await?;
            self.wait_ready(&server_session, &plan, &server.name, &say)
                .await
        }
        .await;
        if let Err(e) = server_session.close().await {
            tracing::debug!(error = %e, "closing the connection to the k3s server");
        }
        result
    }

    /// Installs and restarts unless the node (as `installed` found it)
    /// already runs this plan.
    async fn install_if_changed(
        &self,
        session: &SshSession,
        plan: &InstallPlan,
        installed: remote::Installed,
        token_changed: bool,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<(), K3sError> {
        let fingerprint = plan.fingerprint(&installed.k3s, &installed.script);
        if installed.active
            && !token_changed
            && installed.fingerprint.as_deref() == Some(&fingerprint)
        {
            say(format!(
                "k3s {} unchanged: nothing installed or restarted",
                plan.role.as_str()
            ));
            return Ok(());
        }
        say(format!(
            "installing k3s {} ({}.service) and restarting it",
            plan.role.as_str(),
            plan.service
        ));
        remote::install(session, plan, &fingerprint).await
    }

    /// Waits until the server reports the plan's node Ready.
    async fn wait_ready(
        &self,
        server: &SshSession,
        plan: &InstallPlan,
        server_name: &str,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<(), K3sError> {
        let t = self.timeouts;
        say(format!(
            "waiting for node {} to be Ready (up to {} s)",
            plan.node,
            t.ready.as_secs()
        ));
        let command = format!(
            "{} get node {} -o {}",
            plan.kubectl(),
            deploy_remote::quote(&plan.node),
            deploy_remote::quote("jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
        );
        remote::wait_for(server, &command, "True", t.ready, t.poll)
            .await
            .map_err(|last| K3sError::NotReady {
                node: plan.node.clone(),
                service: plan.service,
                server: server_name.to_owned(),
                waited: t.ready,
                last,
            })
    }
}

impl Stage for K3sStage {
    fn name(&self) -> &str {
        "k3s"
    }

    fn run<'a>(&'a self, cx: StageContext<'a>) -> StageFuture<'a> {
        Box::pin(async move {
            let result = self.run_node(cx).await;
            let state = match &result {
                Ok(()) => GateState::Open,
                Err(e) => GateState::Failed(e.to_string()),
            };
            self.gates.settle(&cx.node.name, state);
            result.map_err(Into::into)
        })
    }

    fn node_finished(&self, node: &str, success: bool) {
        let reason = if success {
            "its deploy ended before its k3s stage".to_owned()
        } else {
            "its deploy failed".to_owned()
        };
        self.gates.settle(node, GateState::Failed(reason));
    }
}

#[cfg(test)]
mod tests;
