//! Owns [`SshSession`]: connecting (TCP or through `ProxyJump` hosts via
//! direct-tcpip channels), the handshake with host key verification, the
//! connect timeout and keepalives, and opening exec channels.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use russh::client::{self, Handle};
use russh::keys::{Algorithm, PublicKey, PublicKeyOrCertificate};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::authenticate;
use crate::error::SshError;
use crate::known_hosts::{self, describe, Verdict};
use crate::options::SshOptions;
use crate::process::{Output, RemoteProcess};
use crate::resolve::{load_config, resolve, Endpoint};
use crate::target::Target;

/// An authenticated SSH connection to one node. Cheap to share by
/// reference: [`exec`](Self::exec) takes `&self`, so several commands can
/// run at once over the one connection.
pub struct SshSession {
    handle: Handle<HostKeyCheck>,
    /// Connections to the jump hosts (with their `user@host:port`), kept
    /// open while this one lives.
    jumps: Vec<(String, Handle<HostKeyCheck>)>,
    endpoint: Endpoint,
    stderr_limit: usize,
    /// What the target's handshake learned.
    state: Arc<HopState>,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession")
            .field("endpoint", &self.endpoint.label())
            .field(
                "jumps",
                &self.jumps.iter().map(|j| &j.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SshSession {
    /// Connects to `target`: applies `ssh_config`, goes through its
    /// `ProxyJump` hosts, checks the host key, authenticates.
    pub async fn connect(target: &Target, opts: &SshOptions) -> Result<Self, SshError> {
        let config = load_config(opts)?;
        let endpoint = resolve(target, &config, opts, true)?;
        let mut jumps: Vec<(String, Handle<HostKeyCheck>)> = Vec::new();
        for hop in &endpoint.jumps {
            let hop = resolve(hop, &config, opts, false)?;
            let flag = Arc::default();
            let handle = match jumps.last() {
                None => connect_tcp(&hop, opts, flag).await?,
                Some((label, previous)) => connect_via(previous, label, &hop, opts, flag).await?,
            };
            tracing::debug!(jump = %hop.label(), "jump host connected");
            jumps.push((hop.label(), handle));
        }
        let state = Arc::new(HopState::default());
        let flag = state.clone();
        let handle = match jumps.last() {
            None => connect_tcp(&endpoint, opts, flag).await?,
            Some((label, previous)) => connect_via(previous, label, &endpoint, opts, flag).await?,
        };
        tracing::info!(node = %endpoint.label(), jumps = jumps.len(), "SSH session established");
        Ok(SshSession {
            handle,
            jumps,
            endpoint,
            stderr_limit: opts.stderr_limit,
            state,
        })
    }

    /// The login name used.
    pub fn user(&self) -> &str {
        &self.endpoint.user
    }

    /// The host connected to (after `HostName`).
    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    /// The port connected to.
    pub fn port(&self) -> u16 {
        self.endpoint.port
    }

    /// The target's host key, as verified when the connection was made
    /// (against known_hosts or the pinned keys): what another client may
    /// pin to reach the same host ([`crate::SshOptions::pinned_host_keys`]).
    pub fn host_key(&self) -> Option<&PublicKey> {
        self.state.host_key.get()
    }

    /// Whether the connection compresses what we send: we asked for it
    /// (`Compression yes`) and the server agreed.
    pub fn is_compressed(&self) -> bool {
        self.state.compressing.load(Ordering::Relaxed)
    }

    /// Whether the connection has closed (e.g. keepalives went unanswered).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Starts `command` (run by the remote user's shell) on a new channel.
    /// `command` is sent inside the encrypted channel, never as an argument
    /// to a local program. sshd caps channels per connection (`MaxSessions`,
    /// 10 by default). The process does not keep the session open: drop
    /// the session and its commands end with [`ExitStatus::NotReported`].
    ///
    /// [`ExitStatus::NotReported`]: crate::ExitStatus::NotReported
    pub async fn exec(&self, command: &str) -> Result<RemoteProcess, SshError> {
        let exec_err = |source| SshError::Exec {
            node: self.endpoint.label(),
            command: command.to_string(),
            source: Box::new(source),
        };
        let channel = self.handle.channel_open_session().await.map_err(exec_err)?;
        channel.exec(true, command).await.map_err(exec_err)?;
        tracing::debug!(node = %self.endpoint.label(), command, "exec started");
        let (read, write) = channel.split();
        Ok(RemoteProcess::start(
            read,
            write.make_writer(),
            self.stderr_limit,
            self.endpoint.label(),
            command.to_string(),
        ))
    }

    /// Runs `command` with empty stdin and collects its output.
    pub async fn run(&self, command: &str) -> Result<Output, SshError> {
        let process = self.exec(command).await?;
        let monitor = process.monitor();
        let (status, stdout) = process.finish().await?;
        Ok(Output {
            status,
            stdout,
            stderr: monitor.stderr(),
        })
    }

    /// Closes the connection (and those to the jump hosts).
    pub async fn close(self) -> Result<(), SshError> {
        self.handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await
            .map_err(|source| SshError::Protocol {
                host: self.endpoint.host.clone(),
                port: self.endpoint.port,
                source: Box::new(source),
            })?;
        for (_, jump) in self.jumps.iter().rev() {
            if let Err(e) = jump
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await
            {
                tracing::debug!(error = %e, "closing a jump connection");
            }
        }
        Ok(())
    }
}

/// Host key verification for one hop, as russh's client handler.
pub(crate) struct HostKeyCheck {
    endpoint: Endpoint,
    state: Arc<HopState>,
}

/// What one hop's handshake learned, shared with its handler.
#[derive(Default)]
pub(crate) struct HopState {
    /// Set at each key exchange: whether client-to-server data is compressed.
    compressing: AtomicBool,
    /// The host key accepted at the first key exchange.
    host_key: OnceLock<PublicKey>,
}

/// Why the handshake failed: protocol, or our own host key verdict.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Ssh(russh::Error),
    HostKey(SshError),
}

impl From<russh::Error> for HandshakeError {
    fn from(e: russh::Error) -> Self {
        HandshakeError::Ssh(e)
    }
}

impl client::Handler for HostKeyCheck {
    type Error = HandshakeError;

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        names: &russh::Names,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let compressing = !matches!(
            names.client_compression,
            russh::compression::Compression::None
        );
        self.state.compressing.store(compressing, Ordering::Relaxed);
        Ok(())
    }

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let ep = &self.endpoint;
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return Err(HandshakeError::HostKey(SshError::HostCertificate {
                    host: ep.host.clone(),
                    port: ep.port,
                }))
            }
        };
        if ep
            .pinned_host_keys
            .iter()
            .any(|k| k.key_data() == key.key_data())
        {
            let _ = self.state.host_key.set(key.clone());
            return Ok(true);
        }
        let verdict = known_hosts::check(&ep.known_hosts_files, &ep.host, ep.port, key)
            .map_err(HandshakeError::HostKey)?;
        match verdict {
            Verdict::Known => {
                let _ = self.state.host_key.set(key.clone());
                Ok(true)
            }
            Verdict::Unknown if ep.accept_new => {
                let Some(file) = ep.known_hosts_files.first() else {
                    return Err(HandshakeError::HostKey(unknown(ep, key)));
                };
                known_hosts::record_new(&ep.known_hosts_files, &ep.host, ep.port, key)
                    .map_err(HandshakeError::HostKey)?;
                tracing::warn!(host = %ep.host, port = ep.port, key = %describe(key), file = %file.display(), "new host key accepted and recorded (accept-new)");
                let _ = self.state.host_key.set(key.clone());
                Ok(true)
            }
            Verdict::Unknown => Err(HandshakeError::HostKey(unknown(ep, key))),
        }
    }
}

fn unknown(ep: &Endpoint, key: &russh::keys::PublicKey) -> SshError {
    SshError::UnknownHostKey {
        host: ep.host.clone(),
        port: ep.port,
        algorithm: key.algorithm().as_str().to_string(),
        fingerprint: key.fingerprint(russh::keys::HashAlg::Sha256).to_string(),
        known_hosts: ep.known_hosts_files.clone(),
    }
}

/// Our receive window per channel (see [`client_config`]).
const RECEIVE_WINDOW: u32 = 16 << 20;

/// russh's client configuration for one hop: keepalives, and the host key
/// algorithms recorded in known_hosts first (as OpenSSH orders them).
fn client_config(ep: &Endpoint) -> Arc<client::Config> {
    let known = known_hosts::known_algorithms(&ep.known_hosts_files, &ep.host, ep.port);
    let mut preferred = russh::Preferred::default();
    let same_type =
        |a: &Algorithm, b: &Algorithm| a == b || (a.clone().is_rsa() && b.clone().is_rsa());
    let mut keys: Vec<Algorithm> = preferred
        .key
        .iter()
        .filter(|a| known.iter().any(|k| same_type(a, k)))
        .cloned()
        .collect();
    keys.extend(
        preferred
            .key
            .iter()
            .filter(|a| !known.iter().any(|k| same_type(a, k)))
            .cloned(),
    );
    preferred.key = keys.into();
    preferred.cipher = cipher_order(aes_in_hardware()).into();
    if ep.compression {
        // `Compression yes`: zlib (the delayed, after-auth variant first, as
        // OpenSSH), worth it on slow links, a cost on fast ones.
        use russh::compression::{NONE, ZLIB, ZLIB_LEGACY};
        preferred.compression = vec![ZLIB_LEGACY, ZLIB, NONE].into();
    }
    Arc::new(client::Config {
        // What the node may send us ahead of our acknowledgement, per
        // channel: russh's 2 MiB caps a channel at 2 MiB per round trip
        // (25 MB/s at 80 ms), too little for the link probe's echo.
        window_size: RECEIVE_WINDOW,
        keepalive_interval: Some(ep.keepalive_interval),
        keepalive_max: ep.keepalive_max,
        nodelay: true,
        preferred,
        ..client::Config::default()
    })
}

/// Our cipher preference. Where the CPU has AES and carry-less multiply
/// instructions, AES-256-GCM first: it costs both ends (our client and the
/// node's sshd, which on a small VPS share the CPU with the Nix daemon
/// importing what we send) a fraction of ChaCha20-Poly1305's CPU per byte.
/// Elsewhere russh's order, ChaCha20-Poly1305 first, as OpenSSH's.
fn cipher_order(aes_in_hardware: bool) -> Vec<russh::cipher::Name> {
    let mut order = russh::Preferred::default().cipher.into_owned();
    if aes_in_hardware {
        order.sort_by_key(|c| *c != russh::cipher::AES_256_GCM);
    }
    order
}

/// Whether AES-GCM runs in hardware here.
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Handshake and authentication over an established byte stream.
async fn handshake<S>(
    ep: &Endpoint,
    stream: S,
    opts: &SshOptions,
    state: Arc<HopState>,
) -> Result<Handle<HostKeyCheck>, SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler = HostKeyCheck {
        endpoint: ep.clone(),
        state,
    };
    let mut handle = client::connect_stream(client_config(ep), stream, handler)
        .await
        .map_err(|e| match e {
            HandshakeError::HostKey(e) => e,
            HandshakeError::Ssh(source) => SshError::Handshake {
                host: ep.host.clone(),
                port: ep.port,
                source: Box::new(source),
            },
        })?;
    authenticate(&mut handle, ep, &opts.agent).await?;
    Ok(handle)
}

/// Connects a hop directly over TCP, within its connect timeout.
async fn connect_tcp(
    ep: &Endpoint,
    opts: &SshOptions,
    state: Arc<HopState>,
) -> Result<Handle<HostKeyCheck>, SshError> {
    let attempt = async {
        let addrs: Vec<_> = tokio::net::lookup_host((ep.host.as_str(), ep.port))
            .await
            .map_err(|source| SshError::Resolve {
                host: ep.host.clone(),
                port: ep.port,
                source,
            })?
            .collect();
        let stream = tokio::net::TcpStream::connect(&addrs[..])
            .await
            .map_err(|source| SshError::Connect {
                host: ep.host.clone(),
                port: ep.port,
                source,
            })?;
        bound_unacknowledged_writes(&stream, ep);
        handshake(ep, stream, opts, state).await
    };
    within_timeout(ep, attempt).await
}

/// Makes the kernel drop the connection when sent data stays
/// unacknowledged for as long as the keepalives allow (interval times
/// (max + 1)). Keepalives alone do not end a dead link while a write is
/// blocked on a full send buffer: russh sends them from the loop that is
/// waiting on that write, and TCP's own retransmissions give up only after
/// about 15 minutes. Best effort: where the option is missing, keepalives
/// remain.
fn bound_unacknowledged_writes(stream: &tokio::net::TcpStream, ep: &Endpoint) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let rounds = u32::try_from(ep.keepalive_max)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let millis = u32::try_from(ep.keepalive_interval.as_millis()).unwrap_or(u32::MAX);
        if millis > 0 {
            let bound = millis.saturating_mul(rounds);
            if let Err(e) = rustix::net::sockopt::set_tcp_user_timeout(stream, bound) {
                tracing::debug!(host = %ep.host, error = %e, "TCP_USER_TIMEOUT not set");
            }
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, ep);
}

/// Connects a hop through a direct-tcpip channel of the previous hop.
async fn connect_via(
    previous: &Handle<HostKeyCheck>,
    previous_label: &str,
    ep: &Endpoint,
    opts: &SshOptions,
    state: Arc<HopState>,
) -> Result<Handle<HostKeyCheck>, SshError> {
    let attempt = async {
        let channel = previous
            .channel_open_direct_tcpip(ep.host.clone(), u32::from(ep.port), "127.0.0.1", 0)
            .await
            .map_err(|source| SshError::Tunnel {
                jump: previous_label.to_string(),
                host: ep.host.clone(),
                port: ep.port,
                source: Box::new(source),
            })?;
        handshake(ep, channel.into_stream(), opts, state).await
    };
    within_timeout(ep, attempt).await
}

async fn within_timeout<T>(
    ep: &Endpoint,
    attempt: impl std::future::Future<Output = Result<T, SshError>>,
) -> Result<T, SshError> {
    tokio::time::timeout(ep.connect_timeout, attempt)
        .await
        .map_err(|_| SshError::ConnectTimeout {
            host: ep.host.clone(),
            port: ep.port,
            timeout: ep.connect_timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_leads_only_with_hardware_aes() {
        let default = russh::Preferred::default().cipher.into_owned();
        assert_eq!(cipher_order(false), default);
        let fast = cipher_order(true);
        assert_eq!(fast[0], russh::cipher::AES_256_GCM);
        assert_eq!(fast.len(), default.len());
        assert!(default.iter().all(|c| fast.contains(c)));
    }
}
