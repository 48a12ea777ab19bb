//! One edge of the fan-out: the relay run on the feeding node over the
//! deployer's session to it, sending to one fed node, with its key
//! authorized on the fed node for the edge's life.

use std::sync::Arc;
use std::time::Duration;

use deploy_remote::quote;
use deploy_ssh::{RemoteProcess, SshSession};
use nix_wire::StorePath;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};

use super::authorize::Authorization;
use super::protocol::{self, Progress, RelayTarget, Reply, Request};
use super::Relay;

/// Why an edge could not be used (its node then gets a direct copy).
#[derive(Debug, thiserror::Error)]
#[error("{feeder} can't feed {fed}: {detail}")]
pub struct EdgeError {
    feeder: String,
    fed: String,
    detail: String,
}

/// The longest reply line read (a batch of done paths).
const MAX_LINE: u64 = 64 << 20;

/// A running relay and its authorization.
pub(crate) struct Edge {
    replies: BufReader<ReadHalf<RemoteProcess>>,
    requests: WriteHalf<RemoteProcess>,
    grant: Option<Authorization>,
    fed: Arc<SshSession>,
    feeder_name: String,
    fed_name: String,
}

/// How the edge is set up.
pub(crate) struct EdgeSettings<'a> {
    pub relay: &'a Relay,
    pub daemon_command: &'a str,
    pub key_lifetime: Duration,
    pub connect_timeout: Duration,
    /// Where the relay reaches the fed node, if not where the deployer did.
    pub fed_address: Option<&'a str>,
    /// The SSH port there, if not the one the deployer used.
    pub fed_port: Option<u16>,
}

impl Edge {
    /// Starts the relay on `feeder`, authorizes its key on `fed` and has it
    /// connect there.
    pub(crate) async fn open(
        (feeder_name, feeder): (&str, &SshSession),
        (fed_name, fed): (&str, Arc<SshSession>),
        settings: &EdgeSettings<'_>,
    ) -> Result<Edge, EdgeError> {
        let fail = |detail: String| EdgeError {
            feeder: feeder_name.to_owned(),
            fed: fed_name.to_owned(),
            detail,
        };
        let host_key = fed
            .host_key()
            .ok_or_else(|| fail("its host key is unknown".into()))?
            .to_openssh()
            .map_err(|e| fail(e.to_string()))?;
        let process = feeder
            .exec(&format!("exec {}", quote(&settings.relay.program())))
            .await
            .map_err(|e| fail(format!("starting the relay: {e}")))?;
        let (replies, requests) = tokio::io::split(process);
        let mut edge = Edge {
            replies: BufReader::new(replies),
            requests,
            grant: None,
            fed: fed.clone(),
            feeder_name: feeder_name.to_owned(),
            fed_name: fed_name.to_owned(),
        };
        let target = RelayTarget {
            host: settings.fed_address.unwrap_or(fed.host()).to_owned(),
            port: settings.fed_port.unwrap_or(fed.port()),
            user: fed.user().to_owned(),
            host_keys: vec![host_key],
            command: settings.daemon_command.to_owned(),
            connect_timeout_secs: settings.connect_timeout.as_secs().max(1),
        };
        let wait = settings.connect_timeout + Duration::from_secs(30);
        edge.send(&Request::Target(target)).await?;
        let (public_key, source) = match edge.reply_within(wait).await? {
            Reply::Ready {
                protocol: protocol::PROTOCOL,
                public_key,
                source_address: Some(source),
            } => (public_key, source),
            Reply::Ready {
                protocol: protocol::PROTOCOL,
                ..
            } => return Err(edge.error("the relay can't tell its address toward the node".into())),
            other => return Err(edge.error(format!("unexpected answer from the relay: {other:?}"))),
        };
        let grant = Authorization::grant(
            &fed,
            &public_key,
            &source,
            settings.daemon_command,
            settings.key_lifetime,
        )
        .await
        .map_err(|e| edge.error(e.to_string()))?;
        edge.grant = Some(grant);
        let connected = async {
            edge.send(&Request::Connect).await?;
            match edge.reply_within(wait).await? {
                Reply::Connected { .. } => Ok(()),
                other => Err(edge.error(format!("unexpected answer from the relay: {other:?}"))),
            }
        }
        .await;
        match connected {
            Ok(()) => Ok(edge),
            Err(e) => {
                edge.close().await;
                Err(e)
            }
        }
    }

    fn error(&self, detail: String) -> EdgeError {
        EdgeError {
            feeder: self.feeder_name.clone(),
            fed: self.fed_name.clone(),
            detail,
        }
    }

    async fn send(&mut self, request: &Request) -> Result<(), EdgeError> {
        let line = protocol::line(request);
        let sent = async {
            self.requests.write_all(line.as_bytes()).await?;
            self.requests.flush().await
        }
        .await;
        sent.map_err(|e| self.error(format!("the relay went away: {e}")))
    }

    async fn reply(&mut self) -> Result<Reply, EdgeError> {
        let mut line = String::new();
        let read = (&mut self.replies)
            .take(MAX_LINE)
            .read_line(&mut line)
            .await;
        match read {
            Ok(0) => Err(self.error("the relay ended".into())),
            Ok(_) => match serde_json::from_str::<Reply>(&line) {
                Ok(Reply::Failed { error }) => Err(self.error(error)),
                Ok(reply) => Ok(reply),
                Err(e) => Err(self.error(format!("unreadable answer from the relay: {e}"))),
            },
            Err(e) => Err(self.error(format!("the relay went away: {e}"))),
        }
    }

    async fn reply_within(&mut self, limit: Duration) -> Result<Reply, EdgeError> {
        match tokio::time::timeout(limit, self.reply()).await {
            Ok(r) => r,
            Err(_) => Err(self.error(format!(
                "the relay did not answer within {} s",
                limit.as_secs()
            ))),
        }
    }

    /// Has the relay copy the closure of `roots` (valid on the feeder);
    /// returns the paths and NAR bytes it sent.
    pub(crate) async fn copy(
        &mut self,
        roots: &[StorePath],
        mut progress: impl FnMut(Progress),
    ) -> Result<(usize, u64), EdgeError> {
        let paths = roots.iter().map(StorePath::to_absolute).collect();
        self.send(&Request::Copy { paths }).await?;
        loop {
            match self.reply().await? {
                Reply::Progress(p) => progress(p),
                Reply::Copied {
                    sent_paths,
                    sent_bytes,
                } => return Ok((sent_paths, sent_bytes)),
                other => {
                    return Err(self.error(format!("unexpected answer from the relay: {other:?}")))
                }
            }
        }
    }

    /// Ends the relay (its stdin closes) and removes its key from the fed
    /// node; a key that can't be removed expires by itself.
    pub(crate) async fn close(mut self) {
        let _ = self.requests.shutdown().await;
        if let Some(grant) = self.grant.take() {
            if let Err(e) = grant.revoke(&self.fed).await {
                tracing::warn!(node = %self.fed_name, error = %e, "the fan-out key could not be removed; it expires by itself");
            }
        }
    }
}
