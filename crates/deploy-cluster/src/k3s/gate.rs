//! Servers before agents: each k3s server taking part in a deploy has a
//! gate that opens when its API answers (or shuts when its deploy failed);
//! agents wait at the gate of the server they join.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

/// Where a server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateState {
    /// Its deploy has not got its k3s API up yet.
    Pending,
    /// Its API answers.
    Open,
    /// Its deploy failed; the reason.
    Failed(String),
}

/// The gates of the servers in one deploy.
#[derive(Debug, Default)]
pub struct Gates {
    servers: BTreeMap<String, watch::Sender<GateState>>,
}

impl Gates {
    /// Gates for `servers`, all pending.
    pub fn new<'a>(servers: impl IntoIterator<Item = &'a str>) -> Self {
        Gates {
            servers: servers
                .into_iter()
                .map(|s| (s.to_owned(), watch::channel(GateState::Pending).0))
                .collect(),
        }
    }

    /// Sets `server`'s state, unless it has one already (the first word
    /// counts: a failure reported after the gate opened changes nothing).
    pub fn settle(&self, server: &str, state: GateState) {
        if let Some(tx) = self.servers.get(server) {
            tx.send_if_modified(|s| {
                let pending = *s == GateState::Pending;
                if pending {
                    *s = state;
                }
                pending
            });
        }
    }

    /// Waits until `server`'s gate opens or fails, for at most `timeout`.
    /// A server without a gate (not in this deploy) counts as open.
    pub async fn wait(&self, server: &str, timeout: Duration) -> GateState {
        let Some(tx) = self.servers.get(server) else {
            return GateState::Open;
        };
        let mut rx = tx.subscribe();
        let settled = tokio::time::timeout(timeout, rx.wait_for(|s| *s != GateState::Pending));
        let state = match settled.await {
            Ok(Ok(state)) => state.clone(),
            Ok(Err(_)) | Err(_) => GateState::Pending,
        };
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn agents_wait_for_the_first_word_of_their_server() {
        let gates = Gates::new(["main"]);
        assert_eq!(gates.wait("other", Duration::ZERO).await, GateState::Open);
        assert_eq!(
            gates.wait("main", Duration::from_millis(10)).await,
            GateState::Pending
        );
        gates.settle("main", GateState::Open);
        gates.settle("main", GateState::Failed("late".into()));
        assert_eq!(gates.wait("main", Duration::ZERO).await, GateState::Open);
    }
}
