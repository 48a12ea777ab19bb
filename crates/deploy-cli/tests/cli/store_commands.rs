//! `deploy store info` and `deploy store dump` against Nix's own tools on a
//! closure of several hundred paths in the local store.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;
use test_support::{fixture_closure, run};

fn deploy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deploy"))
}

fn nix_path_info_json(args: &[&str]) -> Value {
    let text = run(Command::new("nix")
        .args(["--extra-experimental-features", "nix-command"])
        .args(["--option", "substituters", ""])
        .args(["path-info", "--json"])
        .args(args));
    serde_json::from_str(&text).expect("nix path-info prints JSON")
}

fn deploy_info_json(args: &[&str]) -> Value {
    let text = run(deploy().args(["store", "info", "--json"]).args(args));
    serde_json::from_str(&text).expect("deploy store info prints JSON")
}

#[test]
fn info_json_equals_nix_path_info_on_a_300_path_closure() {
    let fx = fixture_closure(300, "cli", 1);
    let ours = deploy_info_json(&["--recursive", &fx.root]);
    let theirs = nix_path_info_json(&["-r", &fx.root]);
    let n = ours.as_array().expect("an array").len();
    assert_eq!(n, fx.closure.len());
    assert!(n > 300);
    assert_eq!(ours, theirs);
    // The same byte for byte, key order included.
    assert_eq!(ours.to_string(), theirs.to_string());

    // Several roots, without --recursive. (Not a .drv: `nix path-info`
    // treats one as an installable and answers for its outputs.)
    let some: Vec<&str> = fx.closure.iter().take(5).map(String::as_str).collect();
    assert_eq!(deploy_info_json(&some), nix_path_info_json(&some));
}

#[test]
fn info_follows_result_symlinks_and_reports_invalid_paths() {
    let fx = fixture_closure(3, "cli-link", 1);
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("result");
    std::os::unix::fs::symlink(&fx.root, &link).unwrap();
    let ours = deploy_info_json(&[link.to_str().unwrap()]);
    assert_eq!(ours, nix_path_info_json(&[&fx.root]));

    let missing = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-not-there";
    let out = deploy()
        .args(["store", "info", "--json", missing])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ours, nix_path_info_json(&[missing]));

    let out = deploy().args(["store", "info", "/etc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/etc") && err.contains("not in the store"),
        "{err}"
    );
}

#[test]
fn dump_is_byte_identical_to_nix_store_dump() {
    let fx = fixture_closure(3, "cli-dump", 64);
    for path in &fx.closure {
        let ours = deploy().args(["store", "dump", path]).output().unwrap();
        assert!(
            ours.status.success(),
            "{}",
            String::from_utf8_lossy(&ours.stderr)
        );
        let theirs = Command::new("nix-store")
            .args(["--dump", path])
            .output()
            .unwrap();
        assert!(theirs.status.success());
        assert!(ours.stdout == theirs.stdout, "NAR of {path} differs");
    }
    let out = deploy()
        .args(["store", "dump", "/nonexistent/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x"));
}

#[test]
fn a_socket_we_may_not_open_says_to_join_nix_users() {
    let fx = fixture_closure(1, "cli-perm", 1);
    // The daemon's socket lives in a root-only (0700) directory.
    let daemon = test_support::SocketDaemon::start();
    let dir = daemon.socket().parent().unwrap().to_owned();
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o700)).unwrap();
    // A copy of the binary that `nobody` may run wherever the checkout is.
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = bin_dir.path().join("deploy");
    std::fs::copy(env!("CARGO_BIN_EXE_deploy"), &bin).unwrap();
    std::fs::set_permissions(bin_dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&bin)
        .args(["store", "info", &fx.root])
        .env("NIX_DAEMON_SOCKET_PATH", daemon.socket())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("nix-users"), "{err}");
    assert!(
        err.contains(&daemon.socket().display().to_string()),
        "{err}"
    );
}

#[test]
fn no_daemon_and_no_nix_daemon_binary_says_to_install_nix() {
    let dir = tempfile::tempdir().unwrap();
    let out = deploy()
        .args([
            "store",
            "info",
            "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x",
        ])
        .env("NIX_DAEMON_SOCKET_PATH", dir.path().join("no-socket"))
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no Nix daemon at"), "{err}");
    assert!(err.contains("no nix-daemon on PATH"), "{err}");
    assert!(err.contains("apt-get install nix-bin"), "{err}");
}
