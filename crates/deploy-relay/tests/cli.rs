//! The `nix-deploy-relay` program as the deployer runs it: its version
//! line, a conversation cut short, and a request it can't read.

use std::io::Write;
use std::process::{Command, Stdio};

fn relay(input: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nix-deploy-relay"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn version_line_is_the_protocols() {
    let out = Command::new(env!("CARGO_BIN_EXE_nix-deploy-relay"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        nix_deploy::fanout::protocol::version_line()
    );
    let usage = Command::new(env!("CARGO_BIN_EXE_nix-deploy-relay"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn a_deployer_gone_before_a_word_ends_it_quietly_and_garbage_is_refused() {
    let out = relay(b"");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    let out = relay(b"{\"copy\":\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let reply: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    let error = reply["failed"]["error"].as_str().unwrap();
    assert!(error.contains("unreadable request"), "{error}");
}
