//! The closure of some store paths, with every member's path info, asked
//! through a daemon connection (the local store's, or a node's).

use std::collections::{BTreeMap, VecDeque};

use nix_wire::daemon::{self, DaemonClient, PathInfo};
use nix_wire::StorePath;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a closure could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    /// A root, or a reference of one, is not valid in that store.
    #[error("{0} is not valid in the store")]
    NotValid(StorePath),
    /// The daemon failed.
    #[error(transparent)]
    Daemon(#[from] daemon::Error),
}

/// Every path reachable from `roots` by references, with its info.
pub async fn closure_infos<S>(
    store: &mut DaemonClient<S>,
    roots: &[StorePath],
) -> Result<BTreeMap<StorePath, PathInfo>, ClosureError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut infos = BTreeMap::new();
    let mut queue: VecDeque<StorePath> = roots.iter().cloned().collect();
    while let Some(path) = queue.pop_front() {
        if infos.contains_key(&path) {
            continue;
        }
        let info = store
            .query_path_info(&path)
            .await?
            .ok_or_else(|| ClosureError::NotValid(path.clone()))?;
        queue.extend(
            info.references
                .iter()
                .filter(|r| !infos.contains_key(*r))
                .cloned(),
        );
        infos.insert(path, info);
    }
    Ok(infos)
}
