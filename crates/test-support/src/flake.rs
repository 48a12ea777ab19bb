//! The repository's real flake, evaluated with nixpkgs replaced by the
//! fixture package set (`tests/fixtures/nixpkgs`), and editable copies of
//! both for tests that change an input or break the flake on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::repo_root;

/// The fixture package set standing in for nixpkgs.
pub fn fixture_nixpkgs() -> PathBuf {
    repo_root().join("tests/fixtures/nixpkgs")
}

/// The flake reference of a flake directory: `path:<dir>` (a `git+file`
/// flake would ignore untracked files of copies).
pub fn flake_ref(dir: &Path) -> String {
    format!("path:{}", dir.display())
}

/// Arguments for `nix` (and `deploy`) replacing nixpkgs by the flake at
/// `nixpkgs`, with no substituters (there is no network).
pub fn nix_args(nixpkgs: &Path) -> Vec<String> {
    vec![
        "--override-input".into(),
        "nixpkgs".into(),
        flake_ref(nixpkgs),
        "--option".into(),
        "substituters".into(),
        String::new(),
    ]
}

fn copy_into(items: &[PathBuf], dir: &Path) {
    for item in items {
        let status = Command::new("cp")
            .arg("-r")
            .arg(item)
            .arg(dir)
            .status()
            .expect("cp");
        assert!(status.success(), "copying {}", item.display());
    }
}

/// A temporary copy of what the flake reads (flake.nix, flake.lock, hosts/,
/// nix/, templates/, Cargo.lock), to edit and evaluate as a `path:` flake.
pub fn copy_flake() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_root();
    let items: Vec<PathBuf> = [
        "flake.nix",
        "flake.lock",
        "hosts",
        "nix",
        "templates",
        "Cargo.lock",
    ]
    .iter()
    .map(|i| repo.join(i))
    .collect();
    copy_into(&items, dir.path());
    dir
}

/// A temporary copy of the fixture nixpkgs, to edit its `versions.json`.
pub fn copy_fixture_nixpkgs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_into(&[fixture_nixpkgs().join(".")], dir.path());
    dir
}

/// Replaces exactly one occurrence of `from` in `file` by `to`.
pub fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).expect("read");
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} should occur once in {}",
        file.display()
    );
    std::fs::write(file, text.replacen(from, to, 1)).expect("write");
}

/// Names in `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
