//! Store path metadata (`ValidPathInfo`, reference §4.3) and ordering
//! paths so that references come before their referrers.

use std::collections::{BTreeMap, BTreeSet};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::hash::Sha256Hash;
use crate::store_path::StorePath;
use crate::wire::{self, WireError, MAX_PATHS, MAX_PATH_LEN, MAX_SHORT_STRING};

/// Most signatures we accept on one path.
const MAX_SIGS: u64 = 1024;

/// What a store knows about one valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The path.
    pub path: StorePath,
    /// The derivation that built it, if known.
    pub deriver: Option<StorePath>,
    /// SHA-256 of its NAR serialisation.
    pub nar_hash: Sha256Hash,
    /// Paths it refers to (may include itself).
    pub references: BTreeSet<StorePath>,
    /// When it was registered (Unix seconds; 0 = "now" when uploading).
    pub registration_time: i64,
    /// Length of its NAR serialisation in bytes.
    pub nar_size: u64,
    /// Whether it was built locally / comes from a trusted origin.
    pub ultimate: bool,
    /// Signatures, each `keyname:base64`.
    pub signatures: BTreeSet<String>,
    /// Content address (e.g. `fixed:r:sha256:…`), if content-addressed.
    pub ca: Option<String>,
}

impl PathInfo {
    /// Reads the fields after the path (deriver … ca, the ≥ 1.16 layout).
    pub(crate) async fn read_unkeyed<R: AsyncRead + Unpin + ?Sized>(
        r: &mut R,
        path: StorePath,
    ) -> Result<Self, WireError> {
        let deriver = wire::read_opt_store_path(r).await?;
        let hash_text = wire::read_string(r, MAX_SHORT_STRING, "narHash").await?;
        let nar_hash = Sha256Hash::parse(&hash_text)
            .map_err(|e| WireError::Malformed(format!("bad narHash: {e}")))?;
        let references = wire::read_store_paths(r, MAX_PATHS)
            .await?
            .into_iter()
            .collect();
        let registration_time = wire::read_u64(r).await? as i64;
        let nar_size = wire::read_u64(r).await?;
        let ultimate = wire::read_bool(r).await?;
        let signatures = wire::read_strings(r, MAX_SIGS, MAX_SHORT_STRING, "signature")
            .await?
            .into_iter()
            .collect();
        let ca = wire::read_string(r, MAX_PATH_LEN, "content address").await?;
        Ok(Self {
            path,
            deriver,
            nar_hash,
            references,
            registration_time,
            nar_size,
            ultimate,
            signatures,
            ca: (!ca.is_empty()).then_some(ca),
        })
    }

    /// Writes the keyed ValidPathInfo in the 1.16 layout (path, deriver,
    /// narHash, references, registrationTime, narSize, ultimate, sigs, ca).
    pub(crate) async fn write_keyed<W: AsyncWrite + Unpin + ?Sized>(
        &self,
        w: &mut W,
    ) -> Result<(), WireError> {
        wire::write_store_path(w, &self.path).await?;
        let deriver = self
            .deriver
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        wire::write_bytes(w, deriver.as_bytes()).await?;
        wire::write_bytes(w, self.nar_hash.to_hex().as_bytes()).await?;
        wire::write_store_paths(w, &self.references).await?;
        wire::write_u64(w, self.registration_time as u64).await?;
        wire::write_u64(w, self.nar_size).await?;
        wire::write_bool(w, self.ultimate).await?;
        wire::write_strings(w, &self.signatures).await?;
        wire::write_bytes(w, self.ca.as_deref().unwrap_or("").as_bytes()).await?;
        Ok(())
    }
}

/// Orders `infos` so that every path comes after the paths it references
/// (references outside the set and self-references are ignored), as
/// uploads need. Ties are broken by path order, so the result is
/// deterministic. Returns the paths of a reference cycle as `Err`.
pub fn topo_sort(infos: Vec<PathInfo>) -> Result<Vec<PathInfo>, Vec<StorePath>> {
    let mut by_path: BTreeMap<StorePath, PathInfo> =
        infos.into_iter().map(|i| (i.path.clone(), i)).collect();
    // Number of not-yet-emitted in-set references of each path.
    let mut pending: BTreeMap<StorePath, usize> = BTreeMap::new();
    let mut referrers: BTreeMap<StorePath, Vec<StorePath>> = BTreeMap::new();
    for (p, info) in &by_path {
        let deps: Vec<_> = info
            .references
            .iter()
            .filter(|r| *r != p && by_path.contains_key(*r))
            .collect();
        pending.insert(p.clone(), deps.len());
        for d in deps {
            referrers.entry(d.clone()).or_default().push(p.clone());
        }
    }
    let mut ready: BTreeSet<StorePath> = pending
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(p, _)| p.clone())
        .collect();
    let mut out = Vec::with_capacity(by_path.len());
    while let Some(p) = ready.pop_first() {
        for r in referrers.remove(&p).unwrap_or_default() {
            if let Some(n) = pending.get_mut(&r) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(r);
                }
            }
        }
        if let Some(info) = by_path.remove(&p) {
            out.push(info);
        }
    }
    if by_path.is_empty() {
        Ok(out)
    } else {
        Err(by_path.into_keys().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, refs: &[&str]) -> PathInfo {
        let p = |n: &str| StorePath::parse(&format!("/nix/store/{}-{n}", "a".repeat(32))).unwrap();
        PathInfo {
            path: p(name),
            deriver: None,
            nar_hash: Sha256Hash([0; 32]),
            references: refs.iter().map(|r| p(r)).collect(),
            registration_time: 0,
            nar_size: 0,
            ultimate: false,
            signatures: BTreeSet::new(),
            ca: None,
        }
    }

    #[test]
    fn references_come_first() {
        let sorted = topo_sort(vec![
            info("c", &["b", "a", "c", "outside"]),
            info("a", &[]),
            info("b", &["a"]),
        ])
        .unwrap();
        let names: Vec<_> = sorted.iter().map(|i| i.path.name().to_owned()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn cycles_are_reported() {
        let err =
            topo_sort(vec![info("x", &["y"]), info("y", &["x"]), info("z", &[])]).unwrap_err();
        assert_eq!(err.len(), 2);
    }

    #[tokio::test]
    async fn write_then_read_round_trips() {
        let mut i = info("b", &["a"]);
        i.ca = Some("fixed:r:sha256:x".into());
        i.signatures.insert("k:sig".into());
        let mut buf = Vec::new();
        i.write_keyed(&mut buf).await.unwrap();
        let mut cur = std::io::Cursor::new(buf);
        let path = wire::read_store_path(&mut cur).await.unwrap();
        assert_eq!(PathInfo::read_unkeyed(&mut cur, path).await.unwrap(), i);
    }
}
