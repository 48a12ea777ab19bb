//! The `--one-copy` child: one copy through our library, in a process of
//! its own so the parent can read its peak RSS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deploy_ssh::{Agent, ConfigFile, SshOptions, SshSession, Target, DEFAULT_DAEMON_COMMAND};
use nix_deploy::copy::{CopyOptions, NodeStore};
use nix_deploy::remote::SshConnector;
use nix_wire::daemon::{connect_local, ClientConfig, DaemonClient};
use nix_wire::StorePath;
use tokio_util::sync::CancellationToken;

/// Copies the closure of `root` to `node` (a Host of the OpenSSH config
/// file `config`) with `jobs` connections; prints
/// `sent_paths sent_bytes engine_seconds` on stdout.
pub fn run(config: PathBuf, node: &str, jobs: Option<usize>, root: &str) -> Result<(), String> {
    runtime()?.block_on(async {
        // As `deploy copy` does: the node and the local store at once.
        let node = async {
            let (session, target, opts) = connect(config, node).await?;
            let connector = SshConnector::new(Arc::new(session), DEFAULT_DAEMON_COMMAND)
                .with_zlib_fallback(target, opts);
            NodeStore::open(connector).await.map_err(|e| e.to_string())
        };
        let local = async {
            let transport = connect_local().await.map_err(|e| e.to_string())?;
            DaemonClient::connect(transport, ClientConfig::default())
                .await
                .map_err(|e| e.to_string())
        };
        let (mut store, mut local) = tokio::try_join!(node, local)?;
        let root = StorePath::parse(root).map_err(|e| e.to_string())?;
        let options = CopyOptions {
            jobs,
            ..CopyOptions::default()
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let timeline = tokio::spawn(timeline(rx, std::time::Instant::now()));
        let report = store
            .copy_closure(
                &mut local,
                &[root],
                &options,
                Some(tx),
                &CancellationToken::new(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if std::env::var_os("TRANSFER_TIMELINE").is_some() {
            eprint!("{}", timeline.await.unwrap_or_default());
        }
        println!(
            "{} {} {:.3}",
            report.sent_paths,
            report.sent_bytes,
            report.elapsed.as_secs_f64()
        );
        Ok(())
    })
}

/// With `TRANSFER_TIMELINE` set, the child prints when the copy was
/// planned and when each batch was done, in seconds since the session was up.
async fn timeline(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<nix_deploy::copy::CopyEvent>,
    start: std::time::Instant,
) -> String {
    use nix_deploy::copy::CopyEvent;
    let (mut out, mut done, mut bytes) = (String::new(), 0, 0u64);
    while let Some(e) = rx.recv().await {
        let t = start.elapsed().as_secs_f64();
        match e {
            CopyEvent::Planned { missing_paths, .. } => {
                out += &format!("{t:.3}s planned: {missing_paths} paths to send\n")
            }
            CopyEvent::BytesSent { bytes: b } => bytes += b,
            CopyEvent::PathsDone { paths } => {
                done += paths;
                out += &format!(
                    "{t:.3}s batch of {paths} done: {done} paths, {} MiB read\n",
                    bytes >> 20
                );
            }
            CopyEvent::Compression { method, reason } => {
                out += &format!("{t:.3}s compression: {method} ({reason})\n")
            }
            CopyEvent::Link {
                rtt,
                bytes_per_second,
                window,
                connections,
            } => {
                out += &format!(
                    "{t:.3}s link: rtt {rtt:?}, {} MiB/s, window {window:?}: {connections} connections\n",
                    bytes_per_second >> 20
                )
            }
            _ => {}
        }
    }
    out
}

/// The `--one-pipe` child: the closure's NARs, encoded by our encoder,
/// through one deploy-ssh exec channel into `wc -c` on the node; no Nix
/// daemon. Isolates our encoder and SSH transport. Prints the byte count.
pub fn pipe(config: PathBuf, node: &str, root: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let paths: Vec<String> = std::process::Command::new("nix-store")
        .args(["-qR", root])
        .output()
        .map_err(|e| e.to_string())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })?;
    runtime()?.block_on(async {
        let (session, _, _) = connect(config, node).await?;
        let mut process = session.exec("wc -c").await.map_err(|e| e.to_string())?;
        for p in paths {
            let (mut nar, _) = nix_wire::nar::encode_async(PathBuf::from(p), 256 * 1024);
            tokio::io::copy(&mut nar, &mut process)
                .await
                .map_err(|e| e.to_string())?;
        }
        process.flush().await.map_err(|e| e.to_string())?;
        let (status, out) = process.finish().await.map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("wc -c: {status}"));
        }
        print!("{}", String::from_utf8_lossy(&out));
        Ok(())
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

/// One SSH session to `node`, a Host of the OpenSSH config file `config`.
/// A session to `node` as the OpenSSH config file `config` describes it,
/// with its target and options.
async fn connect(config: PathBuf, node: &str) -> Result<(SshSession, Target, SshOptions), String> {
    let opts = SshOptions {
        config_file: ConfigFile::Path(config),
        agent: Agent::Disabled,
        connect_timeout: Duration::from_secs(5),
        ..SshOptions::default()
    };
    let target = Target::parse(node).map_err(|e| e.to_string())?;
    let session = SshSession::connect(&target, &opts)
        .await
        .map_err(|e| e.to_string())?;
    Ok((session, target, opts))
}
