//! The `nix-deploy-receive` program as the deployer checks it: its
//! version line, which a sender must see exactly to use it.

use std::process::Command;

#[test]
fn version_line_is_what_senders_look_for() {
    let out = Command::new(env!("CARGO_BIN_EXE_nix-deploy-receive"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        deploy_receive::version_line()
    );
}
