//! The ingress stage: on each k3s server, after its k3s stage, the
//! rendered stack goes into k3s's auto-deploy directory ([`MANIFEST_DIR`]),
//! each file written only when its content changed; files a previous deploy
//! wrote that are no longer rendered are removed (the list lives in
//! [`STATE_FILE`]). k3s's deploy controller applies what it finds there.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use futures_util::{StreamExt, TryStreamExt};

use super::{IngressStack, MANIFEST_DIR};
use deploy_remote::file as node_file;
use deploy_remote::{run, CommandError};
use nix_deploy::stage::{Action, Stage, StageContext, StageFuture};

/// Files written at once.
const PARALLEL_WRITES: usize = 3;

/// One file's write.
type Write<'a> = Pin<Box<dyn Future<Output = Result<bool, CommandError>> + Send + 'a>>;

/// The manifests this tool wrote last time, one file name per line.
pub const STATE_FILE: &str = "/var/lib/nix-deploy/manifests";

/// Writes the ingress stack on the servers.
#[derive(Debug)]
pub struct IngressStage {
    stack: IngressStack,
    servers: BTreeSet<String>,
}

impl IngressStage {
    /// The stage writing `stack` on the nodes named in `servers`.
    pub fn new(stack: IngressStack, servers: impl IntoIterator<Item = String>) -> Self {
        IngressStage {
            stack,
            servers: servers.into_iter().collect(),
        }
    }

    /// Everything it would do on `node`, for `--dry-run`.
    pub fn describe(&self, node: &str) -> Vec<Action> {
        if !self.servers.contains(node) {
            return Vec::new();
        }
        let mut actions: Vec<Action> = self
            .stack
            .manifests
            .iter()
            .map(|m| Action::Write {
                path: format!("{MANIFEST_DIR}/{}", m.file_name),
                mode: 0o600,
                content: m.content.clone(),
            })
            .collect();
        actions.push(Action::Run {
            command: format!("rm -f {MANIFEST_DIR}/NAME"),
            when: Some(format!(
                "for each NAME listed in {STATE_FILE} by an earlier deploy and not written now"
            )),
        });
        actions
    }

    async fn run_node(&self, cx: StageContext<'_>) -> Result<(), CommandError> {
        if !self.servers.contains(&cx.node.name) {
            return Ok(());
        }
        // A few files at a time, each on its own channel (sshd allows 10 per
        // connection, and the deploy holds some), beside reading the list
        // of last time.
        let session = cx.session;
        let writes: Vec<Write<'_>> = self
            .stack
            .manifests
            .iter()
            .map(|m| -> Write<'_> {
                let path = format!("{MANIFEST_DIR}/{}", m.file_name);
                Box::pin(async move {
                    node_file::write_if_changed(session, &path, 0o600, m.content.as_bytes()).await
                })
            })
            .collect();
        let writes = futures_util::stream::iter(writes)
            .buffer_unordered(PARALLEL_WRITES)
            .try_collect::<Vec<bool>>();
        let before = run(cx.session, format!("cat {STATE_FILE} 2>/dev/null || true"));
        let (written, before) = tokio::join!(writes, before);
        let changed = written?.into_iter().filter(|c| *c).count();
        let before = before?;
        let names: BTreeSet<&str> = self
            .stack
            .manifests
            .iter()
            .map(|m| m.file_name.as_str())
            .collect();
        let stale: Vec<String> = before
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.contains('/') && !names.contains(n))
            .map(|n| format!("{MANIFEST_DIR}/{n}"))
            .collect();
        node_file::remove(cx.session, &stale).await?;
        let list: String = names.iter().map(|n| format!("{n}\n")).collect();
        node_file::write_if_changed(cx.session, STATE_FILE, 0o644, list.as_bytes()).await?;
        (cx.progress)(format!(
            "{} manifests in {MANIFEST_DIR}: {changed} written, {} unchanged, {} removed",
            names.len(),
            names.len() - changed,
            stale.len()
        ));
        Ok(())
    }
}

impl Stage for IngressStage {
    fn name(&self) -> &str {
        "ingress"
    }

    fn run<'a>(&'a self, cx: StageContext<'a>) -> StageFuture<'a> {
        Box::pin(async move { self.run_node(cx).await.map_err(Into::into) })
    }
}
