//! Workload manifests shipped from the flake into the same auto-deploy
//! directory: their names are checked so that k3s reads them, keeps them,
//! and they never replace one of ours.

use std::collections::BTreeSet;

use super::{IngressError, Manifest, FILE_PREFIX};

/// Endings k3s's deploy controller reads.
const EXTENSIONS: &[&str] = &[".yaml", ".yml", ".json"];

/// Basenames of k3s's packaged manifests: `--disable X` deletes a file
/// named `X.*`, and the k3s docs warn against reusing these names even
/// for disabled components.
const PACKAGED: &[&str] = &[
    "ccm",
    "coredns",
    "local-storage",
    "metrics-server",
    "rolebindings",
    "runtimes",
    "traefik",
];

/// Checks one workload's file name; returns its AddOn name (up to the
/// first `.`), which k3s uses as an object name.
fn check_name(name: &str) -> Result<&str, String> {
    if name.contains(['/', '\\']) || name.contains("..") {
        return Err("must be a plain file name: no path separators or `..`".into());
    }
    if !EXTENSIONS.iter().any(|ext| name.ends_with(ext)) {
        return Err("must end in .yaml, .yml or .json (k3s reads nothing else)".into());
    }
    let stem = name.split('.').next().unwrap_or("");
    let rfc1123 = !stem.is_empty()
        && stem.len() <= 63
        && stem
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !stem.starts_with('-')
        && !stem.ends_with('-');
    if !rfc1123 {
        return Err(format!(
            "the part before the first dot ({stem:?}) names a k3s AddOn, so it must be 1 to 63 of a-z, 0-9 and -, starting and ending with a letter or digit"
        ));
    }
    if stem.starts_with(FILE_PREFIX) {
        return Err(format!(
            "names starting with {FILE_PREFIX:?} are reserved for nix-deploy's own manifests"
        ));
    }
    if PACKAGED.contains(&stem) {
        return Err(format!(
            "{stem:?} is a k3s packaged component's name, which k3s may delete or overwrite: choose another"
        ));
    }
    Ok(stem)
}

/// Checks every workload manifest: its name, that it has content, and
/// that no two share an AddOn name.
pub(crate) fn check(workloads: &[Manifest]) -> Result<(), IngressError> {
    let mut stems = BTreeSet::new();
    for workload in workloads {
        let name = &workload.file_name;
        let err = |reason: String| IngressError::WorkloadName {
            name: name.clone(),
            reason,
        };
        let stem = check_name(name).map_err(err)?;
        if !stems.insert(stem) {
            return Err(err(format!(
                "another workload manifest also starts with {stem:?}, and k3s names both AddOn {stem:?}: rename one"
            )));
        }
        if workload.content.trim().is_empty() {
            return Err(IngressError::EmptyWorkload { name: name.clone() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["app.yaml", "my-app.yml", "a1.json", "web.v2.yaml"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "app",
            "app.txt",
            "../app.yaml",
            "dir/app.yaml",
            "a\\b.yaml",
            ".app.yaml",
            "App.yaml",
            "my_app.yaml",
            "-app.yaml",
            "traefik.yaml",
            "nix-deploy-x.yaml",
            "app..yaml",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
