//! A deploy preview, computed against the live node and changing nothing:
//! which packages the node's profile gains, loses or changes (names and
//! versions read from store path names, as `nix-env` and `nvd` do), how the
//! closure size changes, and what would be transferred.

use std::collections::BTreeMap;

use nix_wire::daemon::PathInfo;
use nix_wire::StorePath;

/// A package of a profile: one of the profile's references.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// The name without version, e.g. `htop`.
    pub name: String,
    /// The version, e.g. `3.3.0` (empty when the name has none).
    pub version: String,
    /// The store path.
    pub path: StorePath,
}

impl Package {
    /// The package a store path holds, its name split like Nix's
    /// `builtins.parseDrvName`: the version starts after the first `-`
    /// that is followed by a character other than a letter.
    pub fn from_path(path: &StorePath) -> Self {
        let full = path.name();
        let bytes = full.as_bytes();
        let split = (0..bytes.len()).find(|&i| {
            bytes[i] == b'-' && bytes.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic())
        });
        let (name, version) = match split {
            Some(i) => (&full[..i], &full[i + 1..]),
            None => (full, ""),
        };
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            path: path.clone(),
        }
    }
}

/// A package in both profiles, at different store paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageChange {
    /// The package name.
    pub name: String,
    /// The version on the node now.
    pub old_version: String,
    /// The version the deploy brings (equal to the old one for a rebuild).
    pub new_version: String,
}

/// The preview for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDiff {
    /// The profile the node has now, if any.
    pub old_profile: Option<StorePath>,
    /// The profile the deploy would install.
    pub new_profile: StorePath,
    /// Packages only in the new profile.
    pub added: Vec<Package>,
    /// Packages only in the old profile.
    pub removed: Vec<Package>,
    /// Packages in both, changed.
    pub changed: Vec<PackageChange>,
    /// NAR bytes of the old profile's closure (0 without one).
    pub old_closure_bytes: u64,
    /// NAR bytes of the new profile's closure.
    pub new_closure_bytes: u64,
    /// Paths the node lacks, with their NAR sizes.
    pub transfer: BTreeMap<StorePath, u64>,
}

/// What a deploy of several nodes sends through the deployer's uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    /// Paths lacking on some node, each counted once.
    pub paths: usize,
    /// Their NAR bytes: what fan-out sends (about: the seed may also lack
    /// paths that only other nodes have).
    pub bytes: u64,
    /// The NAR bytes of every node's own transfer added up: what direct
    /// copies send.
    pub direct_bytes: u64,
}

impl Uplink {
    /// The uplink's share of `diffs`.
    pub fn of<'a>(diffs: impl IntoIterator<Item = &'a NodeDiff>) -> Self {
        let mut union: BTreeMap<&StorePath, u64> = BTreeMap::new();
        let mut direct_bytes = 0;
        for d in diffs {
            direct_bytes += d.transfer_bytes();
            union.extend(d.transfer.iter().map(|(p, s)| (p, *s)));
        }
        Uplink {
            paths: union.len(),
            bytes: union.values().sum(),
            direct_bytes,
        }
    }
}

impl NodeDiff {
    /// Whether deploying would change nothing on the node.
    pub fn is_empty(&self) -> bool {
        self.old_profile.as_ref() == Some(&self.new_profile) && self.transfer.is_empty()
    }

    /// How many paths the node lacks.
    pub fn transfer_paths(&self) -> usize {
        self.transfer.len()
    }

    /// NAR bytes of the paths the node lacks.
    pub fn transfer_bytes(&self) -> u64 {
        self.transfer.values().sum()
    }

    /// Compares closures. `old` and `new` map each closure member to its
    /// info (`old` from the node, `new` from the local store); `missing`
    /// are the members of `new` the node lacks.
    pub fn compute(
        old_profile: Option<StorePath>,
        old: &BTreeMap<StorePath, PathInfo>,
        new_profile: StorePath,
        new: &BTreeMap<StorePath, PathInfo>,
        missing: &[StorePath],
    ) -> Self {
        let packages = |profile: Option<&StorePath>, infos: &BTreeMap<StorePath, PathInfo>| {
            let mut by_name: BTreeMap<String, Package> = BTreeMap::new();
            if let Some(info) = profile.and_then(|p| infos.get(p)) {
                for r in info.references.iter().filter(|r| **r != info.path) {
                    let pkg = Package::from_path(r);
                    by_name.insert(pkg.name.clone(), pkg);
                }
            }
            by_name
        };
        let before = packages(old_profile.as_ref(), old);
        let after = packages(Some(&new_profile), new);
        let added = after
            .iter()
            .filter(|(n, _)| !before.contains_key(*n))
            .map(|(_, p)| p.clone())
            .collect();
        let removed = before
            .iter()
            .filter(|(n, _)| !after.contains_key(*n))
            .map(|(_, p)| p.clone())
            .collect();
        let changed = after
            .iter()
            .filter_map(|(n, new)| {
                let old = before.get(n)?;
                (old.path != new.path).then(|| PackageChange {
                    name: n.clone(),
                    old_version: old.version.clone(),
                    new_version: new.version.clone(),
                })
            })
            .collect();
        let size = |m: &BTreeMap<StorePath, PathInfo>| m.values().map(|i| i.nar_size).sum();
        Self {
            added,
            removed,
            changed,
            old_closure_bytes: size(old),
            new_closure_bytes: size(new),
            transfer: missing
                .iter()
                .filter_map(|p| Some((p.clone(), new.get(p)?.nar_size)))
                .collect(),
            old_profile,
            new_profile,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn sp(name: &str, hash: char) -> StorePath {
        StorePath::from_base_name(&format!("{}-{name}", hash.to_string().repeat(32))).unwrap()
    }

    fn info(path: &StorePath, refs: &[&StorePath], size: u64) -> PathInfo {
        PathInfo {
            path: path.clone(),
            deriver: None,
            nar_hash: nix_wire::Sha256Hash::digest(b""),
            references: refs.iter().map(|r| (*r).clone()).collect::<BTreeSet<_>>(),
            registration_time: 0,
            nar_size: size,
            ultimate: false,
            signatures: BTreeSet::new(),
            ca: None,
        }
    }

    #[test]
    fn names_split_like_parse_drv_name() {
        for (full, name, version) in [
            ("htop-3.3.0", "htop", "3.3.0"),
            ("k3s-1.35.1+k3s1", "k3s", "1.35.1+k3s1"),
            ("nix-deploy-profile", "nix-deploy-profile", ""),
            (
                "python3.12-requests-2.31.0",
                "python3.12-requests",
                "2.31.0",
            ),
            ("foo-bar-2", "foo-bar", "2"),
        ] {
            let p = Package::from_path(&sp(full, '0'));
            assert_eq!(
                (p.name.as_str(), p.version.as_str()),
                (name, version),
                "{full}"
            );
        }
    }

    #[test]
    fn added_removed_changed_and_sizes() {
        let (htop, cowsay1, cowsay2) = (
            sp("htop-3.3.0", '1'),
            sp("cowsay-3.7.0", '2'),
            sp("cowsay-3.8.0", '3'),
        );
        let dino = sp("dinosay-1.0", '4');
        let (old_p, new_p) = (sp("profile", '5'), sp("profile", '6'));
        let old: BTreeMap<_, _> = [
            info(&old_p, &[&htop, &cowsay1, &dino], 100),
            info(&htop, &[], 10),
            info(&cowsay1, &[], 20),
            info(&dino, &[], 5),
        ]
        .into_iter()
        .map(|i| (i.path.clone(), i))
        .collect();
        let new: BTreeMap<_, _> = [
            info(&new_p, &[&htop, &cowsay2], 90),
            info(&htop, &[], 10),
            info(&cowsay2, &[], 25),
        ]
        .into_iter()
        .map(|i| (i.path.clone(), i))
        .collect();
        let d = NodeDiff::compute(Some(old_p), &old, new_p.clone(), &new, &[new_p, cowsay2]);
        assert!(d.added.is_empty());
        assert_eq!(
            d.removed
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["dinosay"]
        );
        assert_eq!(
            d.changed,
            [PackageChange {
                name: "cowsay".into(),
                old_version: "3.7.0".into(),
                new_version: "3.8.0".into()
            }]
        );
        assert_eq!((d.old_closure_bytes, d.new_closure_bytes), (135, 125));
        assert_eq!((d.transfer_paths(), d.transfer_bytes()), (2, 115));
        assert!(!d.is_empty());
    }
}
