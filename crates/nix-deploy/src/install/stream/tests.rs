//! The tar stream against the tar crate's reader and GNU tar: same NAR
//! after extraction, canonical metadata, long names and link targets.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use nix_wire::daemon::PathInfo;
use nix_wire::nar::hash_path;
use nix_wire::StorePath;

use super::*;

const BASE: &str = "00000000000000000000000000000000-demo";

/// A store-like directory holding one path with every kind of node.
fn store() -> tempfile::TempDir {
    let store = tempfile::tempdir().unwrap();
    let root = store.path().join(BASE);
    let deep = root.join("a".repeat(60)).join("b".repeat(60));
    fs::create_dir_all(&deep).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join("data"), b"hello\n").unwrap();
    fs::write(deep.join("c".repeat(120)), vec![7u8; 70_000]).unwrap();
    let tool = root.join("bin/tool");
    fs::write(&tool, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    symlink("/etc/passwd", root.join("abs")).unwrap();
    symlink(format!("../{}", "x".repeat(300)), root.join("long-link")).unwrap();
    store
}

fn info(store: &Path) -> PathInfo {
    let stats = hash_path(&store.join(BASE)).unwrap();
    PathInfo {
        path: StorePath::from_base_name(BASE).unwrap(),
        deriver: None,
        nar_hash: stats.sha256,
        references: BTreeSet::new(),
        registration_time: 0,
        nar_size: stats.size,
        ultimate: false,
        signatures: BTreeSet::new(),
        ca: None,
    }
}

async fn tar_of(store: &Path, info: PathInfo) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    send_tar(vec![info], store.to_owned(), &mut out, &Events::default()).await?;
    Ok(out)
}

#[tokio::test]
async fn entries_carry_canonical_metadata() {
    let store = store();
    let info = info(store.path());
    let bytes = tar_of(store.path(), info).await.unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut seen = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let path = entry.path().unwrap().display().to_string();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{path}");
        assert_eq!(h.mtime().unwrap(), 1, "{path}");
        let mode = h.mode().unwrap();
        match h.entry_type() {
            EntryType::Directory => assert_eq!(mode, 0o555, "{path}"),
            EntryType::Symlink => {}
            _ if path.ends_with("bin/tool") => assert_eq!(mode, 0o555),
            _ => assert_eq!(mode, 0o444, "{path}"),
        }
        if path.ends_with("long-link") {
            let target = entry.link_name().unwrap().unwrap();
            assert_eq!(target.to_str().unwrap().len(), 303);
        }
        seen.push(path);
    }
    assert_eq!(seen[0].trim_end_matches('/'), BASE);
    assert!(
        seen.iter().any(|p| p.len() > 250),
        "a GNU long name: {seen:?}"
    );
    assert_eq!(seen.len(), 10, "{seen:?}");
}

#[tokio::test]
async fn gnu_tar_extracts_the_same_nar() {
    let store = store();
    let info = info(store.path());
    let bytes = tar_of(store.path(), info.clone()).await.unwrap();
    let dest = tempfile::tempdir().unwrap();
    let archive = dest.path().join("x.tar");
    fs::write(&archive, bytes).unwrap();
    let out = dest.path().join("out");
    fs::create_dir(&out).unwrap();
    let status = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&out)
        .arg("-f")
        .arg(&archive)
        .status()
        .unwrap();
    assert!(status.success());
    let stats = hash_path(&out.join(BASE)).unwrap();
    assert_eq!((stats.sha256, stats.size), (info.nar_hash, info.nar_size));
    let meta = fs::metadata(out.join(BASE).join("data")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert_eq!(
        std::os::unix::fs::MetadataExt::mtime(&meta),
        1,
        "mtime as in the store"
    );
    // Read-only directories: make them writable again so the tempdir can go.
    Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(&out)
        .status()
        .unwrap();
}

#[tokio::test]
async fn a_path_not_matching_its_info_is_refused() {
    let store = store();
    let mut info = info(store.path());
    info.nar_size += 1;
    let err = tar_of(store.path(), info).await.unwrap_err();
    assert!(
        matches!(err, StreamError::Local(LocalError::Mismatch { .. })),
        "{err:?}"
    );
}
