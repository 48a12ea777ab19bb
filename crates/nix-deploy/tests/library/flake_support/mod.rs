//! `NixCli`s for tests that evaluate the repository's real flake with
//! nixpkgs replaced by the fixture package set (see `test_support::flake`).

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use nix_deploy::nix_cli::NixCli;
pub use test_support::flake::{
    copy_fixture_nixpkgs, copy_flake, edit, fixture_nixpkgs, flake_ref, names_in,
};

/// The repository root.
pub fn repo() -> PathBuf {
    test_support::repo_root()
}

/// `nix` for the flake at `dir` with nixpkgs replaced by the flake at
/// `nixpkgs`, and no substituters (there is no network).
pub fn nix_with(dir: &Path, nixpkgs: &Path) -> NixCli {
    NixCli::new(flake_ref(dir)).with_args(test_support::flake::nix_args(nixpkgs))
}

/// `nix` for the repository's own flake (as a git flake, like `--flake .`:
/// a `path:` flake would copy the whole work tree, build outputs included,
/// into the store) with the fixture nixpkgs.
pub fn repo_nix() -> NixCli {
    repo_nix_with(&fixture_nixpkgs())
}

/// The same with nixpkgs replaced by the flake at `nixpkgs`.
pub fn repo_nix_with(nixpkgs: &Path) -> NixCli {
    NixCli::new(repo().display().to_string()).with_args(test_support::flake::nix_args(nixpkgs))
}
