//! Helpers for tests that evaluate the repository's real flake with nixpkgs
//! replaced by the fixture package set (`tests/fixtures/nixpkgs`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use nix_deploy::nix_cli::NixCli;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The fixture package set standing in for nixpkgs.
pub fn fixture_nixpkgs() -> PathBuf {
    repo().join("tests/fixtures/nixpkgs")
}

/// `nix` for the flake at `dir` (a `path:` flake) with nixpkgs replaced by
/// the flake at `nixpkgs`, and no substituters (there is no network).
pub fn nix_with(dir: &Path, nixpkgs: &Path) -> NixCli {
    NixCli::new(format!("path:{}", dir.display())).with_args([
        "--override-input".to_string(),
        "nixpkgs".to_string(),
        format!("path:{}", nixpkgs.display()),
        "--option".to_string(),
        "substituters".to_string(),
        String::new(),
    ])
}

/// `nix` for the repository's own flake with the fixture nixpkgs.
pub fn repo_nix() -> NixCli {
    nix_with(&repo(), &fixture_nixpkgs())
}

/// A temporary copy of what the flake reads (flake.nix, flake.lock, hosts/,
/// nix/, Cargo.lock), to edit and evaluate as a `path:` flake.
pub fn copy_flake() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = repo();
    for item in ["flake.nix", "flake.lock", "hosts", "nix", "Cargo.lock"] {
        let status = Command::new("cp")
            .arg("-r")
            .arg(repo.join(item))
            .arg(dir.path())
            .status()
            .expect("cp");
        assert!(status.success(), "copying {item}");
    }
    dir
}

/// A temporary copy of the fixture nixpkgs, to edit its versions.json.
pub fn copy_fixture_nixpkgs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", fixture_nixpkgs().display()))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success());
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
