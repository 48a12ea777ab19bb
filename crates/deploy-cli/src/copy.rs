//! `deploy copy --to ssh://[USER@]HOST[:PORT] PATH...`: pushes closures to
//! a node over our own SSH connection, with the copy engine.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use deploy_ssh::{SshOptions, SshSession, Target, DEFAULT_DAEMON_COMMAND};
use nix_deploy::copy::{CopyError, CopyOptions, NodeStore};
use nix_deploy::remote::SshConnector;
use nix_wire::daemon::{self, ClientConfig, DaemonClient};
use tokio_util::sync::CancellationToken;

use crate::progress::{self, Mode};
use crate::signing_args::SigningArgs;
use crate::ssh_args::SshArgs;
use crate::store::{resolve, StoreError};
use crate::transfer_args::{ReceiverArgError, TransferArgs};

/// Arguments of `deploy copy`.
#[derive(Args)]
pub struct CopyArgs {
    /// The node: ssh://[USER@]HOST[:PORT], [USER@]HOST[:PORT] or an ssh_config alias.
    #[arg(long, value_name = "NODE")]
    to: String,
    /// Store paths (or symlinks to them, like ./result) whose closures to copy.
    #[arg(required = true)]
    paths: Vec<String>,
    /// Daemon connections uploading at once (default: sized from the
    /// measured link, 4 to 8, or 2 when compressing).
    #[arg(long)]
    jobs: Option<usize>,
    /// Ask the node to check signatures even if we are a trusted user.
    #[arg(long)]
    check_sigs: bool,
    /// Command that runs the Nix daemon on the node, speaking on stdio.
    #[arg(long, default_value = DEFAULT_DAEMON_COMMAND, value_name = "COMMAND")]
    remote_program: String,
    /// Print progress and the result as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    transfer: TransferArgs,
    #[command(flatten)]
    ssh: SshArgs,
}

/// What can go wrong in `deploy copy`.
#[derive(Debug, thiserror::Error)]
pub enum CopyCmdError {
    /// A path argument is wrong.
    #[error(transparent)]
    Path(#[from] StoreError),
    /// The SSH connection failed.
    #[error(transparent)]
    Ssh(#[from] deploy_ssh::SshError),
    /// The local daemon failed.
    #[error("local store: {0}")]
    Local(#[from] daemon::Error),
    /// The copy failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// The signing key could not be read or created.
    #[error(transparent)]
    Key(#[from] nix_deploy::keys::KeyFileError),
    /// The receiver can't be used.
    #[error(transparent)]
    Receiver(#[from] ReceiverArgError),
}

/// Runs `deploy copy`.
pub async fn run(args: CopyArgs) -> Result<ExitCode, CopyCmdError> {
    let roots = args
        .paths
        .iter()
        .map(|p| resolve(p))
        .collect::<Result<Vec<_>, _>>()?;
    let signing_key = args.signing.load()?;
    let receiver = args.transfer.receiver()?;
    let target = Target::parse(&args.to)?;
    let ssh = SshOptions {
        compression: args.transfer.ssh_compression(),
        ..args.ssh.options()
    };
    // The local store and the node come up at the same time.
    let local = async {
        let local = daemon::connect_local().await?;
        Ok::<_, CopyCmdError>(DaemonClient::connect(local, ClientConfig::default()).await?)
    };
    let node = async {
        let session = SshSession::connect(&target, &ssh).await?;
        let connector = SshConnector::new(Arc::new(session), args.remote_program.clone())
            .with_zlib_fallback(target.clone(), ssh.clone());
        Ok::<_, CopyCmdError>(NodeStore::open(connector).await?)
    };
    let (mut local, mut node) = tokio::try_join!(local, node)?;
    let name = node.node().to_owned();

    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let mode = Mode::pick(args.json);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let renderer = tokio::spawn(progress::render(mode, name.clone(), rx));
    let options = CopyOptions {
        jobs: args.jobs,
        substitute_on_node: args.transfer.substitute(),
        check_signatures: args.check_sigs,
        signing_key,
        compression: args.transfer.compression(),
        receiver,
        ..CopyOptions::default()
    };
    let result = node
        .copy_closure(&mut local, &roots, &options, Some(tx), &cancel)
        .await;
    let _ = renderer.await;
    let report = result?;
    progress::summary(mode, &name, &report);
    Ok(ExitCode::SUCCESS)
}
