//! Shared by the `nar_*` tests: the fixture corpus with every edge case and
//! `nix-store` as the reference implementation.

#![allow(dead_code)] // each test binary uses a different subset

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use nix_wire::nar::DEFAULT_CHUNK_SIZE;

/// Whether `nix-store` can be run; outside CI, tests needing it are skipped.
pub fn have_nix_store() -> bool {
    let ok = Command::new("nix-store")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(!test_support::in_ci(), "nix-store is required in CI");
        eprintln!("nix-store not found: skipping");
    }
    ok
}

/// `nix-store --dump path`, in full.
pub fn nix_dump(path: &Path) -> Vec<u8> {
    let out = Command::new("nix-store")
        .arg("--dump")
        .arg(path)
        .output()
        .expect("run nix-store --dump");
    assert!(
        out.status.success(),
        "nix-store --dump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `nix-store --dump path | sha256sum`: (hex digest, size).
pub fn nix_dump_sha256(path: &Path) -> (String, u64) {
    let script = format!(
        "nix-store --dump '{}' | tee >(wc -c >&2) | sha256sum",
        path.display()
    );
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success());
    let hex = String::from_utf8(out.stdout).unwrap()[..64].to_string();
    let size = String::from_utf8(out.stderr)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (hex, size)
}

/// `nix-store --restore dest < nar`.
pub fn nix_restore(nar: &[u8], dest: &Path) {
    let mut child = Command::new("nix-store")
        .arg("--restore")
        .arg(dest)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(nar).unwrap();
    assert!(child.wait().unwrap().success());
}

fn file(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Builds the edge-case corpus as directory `root` (which must not exist).
pub fn build_corpus(root: &Path) {
    fs::create_dir(root).unwrap();
    file(&root.join("empty"), b"", 0o644);
    file(&root.join("exe"), b"#!/bin/sh\necho hi\n", 0o755);
    file(&root.join("owner-exec-only"), b"x", 0o700);
    file(&root.join("group-exec-only"), b"x", 0o654);
    file(&root.join("read-only"), b"ro", 0o444);
    fs::create_dir(root.join("emptydir")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    symlink("/etc/passwd", root.join("absolute")).unwrap();
    symlink("emptydir", root.join("to-dir")).unwrap();
    symlink("../../../../..", root.join("dotdots")).unwrap();

    let names = root.join("names");
    fs::create_dir(&names).unwrap();
    let weird: [&[u8]; 16] = [
        b"B",
        b"a",
        b"_x",
        b"Z",
        "ä".as_bytes(),
        b"a.b",
        b"a-b",
        b"a0",
        b"with space",
        "日本語".as_bytes(),
        "emoji 🎉".as_bytes(),
        b"\xff\xfe not utf-8",
        b"-dash",
        b"~",
        b".hidden",
        b"...",
    ];
    for (i, name) in weird.iter().enumerate() {
        file(
            &names.join(OsStr::from_bytes(name)),
            format!("{i}").as_bytes(),
            0o644,
        );
    }
    file(&names.join("n".repeat(255)), b"long name", 0o644);

    let mut deep = root.join("deep");
    for _ in 0..100 {
        fs::create_dir(&deep).unwrap();
        deep = deep.join("d");
    }
    file(&deep, b"bottom", 0o644);

    let many = root.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..2000 {
        file(
            &many.join(format!("f{i}")),
            format!("{}", i * 7).repeat(i % 13).as_bytes(),
            0o644,
        );
    }

    let sizes = root.join("sizes");
    fs::create_dir(&sizes).unwrap();
    let c = DEFAULT_CHUNK_SIZE;
    for len in [1, 7, 8, 9, 4095, 4096, c - 1, c, c + 1, 2 * c, 3 * c + 5] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        file(&sizes.join(format!("len{len}")), &data, 0o644);
    }
}
