//! The closure of some roots in the local store, with every member's path
//! info, asked through the local daemon.

use std::collections::{BTreeMap, VecDeque};

use nix_wire::daemon::{DaemonClient, PathInfo};
use nix_wire::StorePath;
use tokio::io::{AsyncRead, AsyncWrite};

use super::CopyError;

/// Every path reachable from `roots` by references, with its info.
pub async fn local_closure<S>(
    local: &mut DaemonClient<S>,
    roots: &[StorePath],
) -> Result<BTreeMap<StorePath, PathInfo>, CopyError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut infos = BTreeMap::new();
    let mut queue: VecDeque<StorePath> = roots.iter().cloned().collect();
    while let Some(path) = queue.pop_front() {
        if infos.contains_key(&path) {
            continue;
        }
        let info = local
            .query_path_info(&path)
            .await
            .map_err(CopyError::Local)?
            .ok_or_else(|| CopyError::NotInLocalStore { path: path.clone() })?;
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
