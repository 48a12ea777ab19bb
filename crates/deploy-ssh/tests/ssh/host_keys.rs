//! Host key verification against a real sshd: unknown, accept-new, known,
//! changed, hashed, revoked.

use crate::common;

use common::{fingerprint, write_known_hosts, Fixture};
use deploy_ssh::{SshError, SshSession};

#[tokio::test]
async fn known_key_in_bracket_port_form_is_accepted() {
    let f = Fixture::new();
    let line = f.sshd.known_hosts_line();
    assert!(line.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", f.sshd.port)));
    let session = SshSession::connect(&f.sshd.target(), &f.options()).await;
    assert!(session.is_ok(), "{:?}", session.err());
}

#[tokio::test]
async fn unknown_key_is_refused_by_default() {
    let f = Fixture::new();
    write_known_hosts(f.home.path(), &[]);
    let err = SshSession::connect(&f.sshd.target(), &f.options())
        .await
        .expect_err("unknown host must be refused");
    let msg = err.to_string();
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{msg}");
    assert!(msg.contains(&fingerprint(&f.sshd.host_key)), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{}", f.sshd.port)), "{msg}");
    assert!(msg.contains("accept-new"), "{msg}");
    // Nothing was recorded.
    let text = std::fs::read_to_string(f.home.path().join("known_hosts")).expect("read");
    assert!(text.trim().is_empty());
}

#[tokio::test]
async fn missing_known_hosts_file_means_unknown() {
    let f = Fixture::new();
    std::fs::remove_file(f.home.path().join("known_hosts")).expect("rm");
    let err = SshSession::connect(&f.sshd.target(), &f.options())
        .await
        .expect_err("unknown host must be refused");
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{err}");
}

#[tokio::test]
async fn accept_new_records_the_key() {
    let f = Fixture::new();
    let known_hosts = f.home.path().join("sub/dir/known_hosts");
    let mut opts = f.options();
    opts.known_hosts_files = vec![known_hosts.clone()];
    opts.accept_new_host_keys = true;
    SshSession::connect(&f.sshd.target(), &opts)
        .await
        .expect("accept-new connects");
    let text = std::fs::read_to_string(&known_hosts).expect("known_hosts written");
    let expected = f.sshd.known_hosts_line();
    let mut want = expected.split_whitespace().take(3);
    let mut got = text.split_whitespace();
    for _ in 0..3 {
        assert_eq!(got.next(), want.next(), "{text}");
    }
    // Now known even in strict mode.
    opts.accept_new_host_keys = false;
    SshSession::connect(&f.sshd.target(), &opts)
        .await
        .expect("recorded key accepted");
    assert_eq!(
        std::fs::read_to_string(&known_hosts)
            .expect("read")
            .lines()
            .count(),
        1
    );
}

#[tokio::test]
async fn changed_key_is_refused_even_with_accept_new() {
    let f = Fixture::new();
    let other = common::keygen(&f.home.path().join("other_host_key"), "ed25519", "");
    let stale = format!("[127.0.0.1]:{} {}", f.sshd.port, common::public_key(&other));
    write_known_hosts(f.home.path(), &["# header".to_string(), stale]);
    let mut opts = f.options();
    opts.accept_new_host_keys = true;
    let err = SshSession::connect(&f.sshd.target(), &opts)
        .await
        .expect_err("changed key must be refused");
    let msg = err.to_string();
    assert!(
        matches!(err, SshError::HostKeyChanged { line: 2, .. }),
        "{msg}"
    );
    assert!(msg.contains(&fingerprint(&other)), "{msg}");
    assert!(msg.contains(&fingerprint(&f.sshd.host_key)), "{msg}");
    let file = f.home.path().join("known_hosts");
    assert!(msg.contains(&format!("{}:2", file.display())), "{msg}");
}

#[tokio::test]
async fn hashed_entry_is_accepted() {
    let f = Fixture::new();
    let file = f.home.path().join("known_hosts");
    let status = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("ssh-keygen -H");
    assert!(status.success());
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.starts_with("|1|"), "{text}");
    SshSession::connect(&f.sshd.target(), &f.options())
        .await
        .expect("hashed entry accepted");
}

#[tokio::test]
async fn revoked_key_is_refused() {
    let f = Fixture::new();
    let revoked = format!("@revoked * {}", common::public_key(&f.sshd.host_key));
    write_known_hosts(f.home.path(), &[revoked, f.sshd.known_hosts_line()]);
    let err = SshSession::connect(&f.sshd.target(), &f.options())
        .await
        .expect_err("revoked key must be refused");
    assert!(
        matches!(err, SshError::HostKeyRevoked { line: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn recorded_key_type_is_preferred() {
    // The server has ed25519 and ecdsa host keys; only ecdsa is recorded.
    let home = common::tempdir();
    let key = common::keygen(&home.path().join("id"), "ed25519", "");
    let sshd = common::Sshd::start_with_host_keys(home.path(), &[&key], &["ecdsa", "ed25519"]);
    write_known_hosts(home.path(), &[sshd.known_hosts_line()]);
    SshSession::connect(&sshd.target(), &common::options(home.path(), &[&key]))
        .await
        .expect("ecdsa host key accepted");
}
