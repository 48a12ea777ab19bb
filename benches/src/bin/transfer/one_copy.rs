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
pub fn run(config: PathBuf, node: &str, jobs: usize, root: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
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
        let connector = SshConnector::new(Arc::new(session), DEFAULT_DAEMON_COMMAND);
        let mut store = NodeStore::open(connector)
            .await
            .map_err(|e| e.to_string())?;
        let transport = connect_local().await.map_err(|e| e.to_string())?;
        let mut local = DaemonClient::connect(transport, ClientConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        let root = StorePath::parse(root).map_err(|e| e.to_string())?;
        let options = CopyOptions {
            jobs,
            ..CopyOptions::default()
        };
        let report = store
            .copy_closure(
                &mut local,
                &[root],
                &options,
                None,
                &CancellationToken::new(),
            )
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{} {} {:.3}",
            report.sent_paths,
            report.sent_bytes,
            report.elapsed.as_secs_f64()
        );
        Ok(())
    })
}
