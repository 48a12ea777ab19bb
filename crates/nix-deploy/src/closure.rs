//! The closure of some store paths, with every member's path info, asked
//! through a daemon connection (the local store's, or a node's).

use std::collections::{BTreeMap, BTreeSet};

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
    // Breadth first, a whole frontier per pipelined query.
    let mut frontier: Vec<StorePath> = roots.to_vec();
    while !frontier.is_empty() {
        frontier.sort();
        frontier.dedup();
        frontier.retain(|p| !infos.contains_key(p));
        let answers = store.query_path_infos(&frontier).await?;
        let mut next = Vec::new();
        for (path, info) in frontier.drain(..).zip(answers) {
            let info = info.ok_or_else(|| ClosureError::NotValid(path.clone()))?;
            next.extend(
                info.references
                    .iter()
                    .filter(|r| !infos.contains_key(*r))
                    .cloned(),
            );
            infos.insert(path, info);
        }
        frontier = next;
    }
    Ok(infos)
}

/// The closure of `roots` within `infos`, a closure already known (paths
/// outside it are skipped): no daemon asked.
pub fn closure_within(
    infos: &BTreeMap<StorePath, PathInfo>,
    roots: &[StorePath],
) -> BTreeSet<StorePath> {
    let mut seen: BTreeSet<StorePath> = BTreeSet::new();
    let mut stack: Vec<&StorePath> = roots.iter().collect();
    while let Some(p) = stack.pop() {
        if !seen.insert(p.clone()) {
            continue;
        }
        if let Some(info) = infos.get(p) {
            stack.extend(info.references.iter().filter(|r| !seen.contains(*r)));
        }
    }
    seen
}
