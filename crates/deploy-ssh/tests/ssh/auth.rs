//! Authentication against a real sshd: key files of each type, ssh-agent,
//! encrypted keys, and the failure messages.

use crate::common;

use std::path::Path;

use common::{keygen, options, tempdir, write_known_hosts, SshAgent, Sshd};
use deploy_ssh::{Agent, SshError, SshOptions, SshSession};

async fn assert_connects(sshd: &Sshd, opts: &SshOptions) {
    let session = match SshSession::connect(&sshd.target(), opts).await {
        Ok(s) => s,
        Err(e) => panic!("connect failed: {e}\nsshd log:\n{}", sshd.log()),
    };
    let out = session.run("echo hello").await.expect("run");
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(session.user(), "root");
}

/// Returns the server and the directory holding its log.
async fn key_file_auth(kind: &str) -> (tempfile::TempDir, Sshd) {
    let home = tempdir();
    let key = keygen(&home.path().join(format!("id_{kind}")), kind, "");
    let sshd = Sshd::start_debug(home.path(), &[&key]);
    write_known_hosts(home.path(), &[sshd.known_hosts_line()]);
    assert_connects(&sshd, &options(home.path(), &[&key])).await;
    (home, sshd)
}

#[tokio::test]
async fn ed25519_key_file() {
    drop(key_file_auth("ed25519").await);
}

#[tokio::test]
async fn ecdsa_key_file() {
    drop(key_file_auth("ecdsa").await);
}

/// Debian 12's OpenSSH refuses SHA-1 `ssh-rsa` signatures by default; the
/// log shows the algorithm used.
#[tokio::test]
async fn rsa_key_file_uses_rsa_sha2() {
    let (_home, sshd) = key_file_auth("rsa").await;
    let log = sshd.log();
    assert!(log.contains("pkalg rsa-sha2-512"), "{log}");
    assert!(!log.contains("pkalg ssh-rsa "), "{log}");
}

#[tokio::test]
async fn default_identity_file_in_home() {
    let home = tempdir();
    std::fs::create_dir_all(home.path().join(".ssh")).expect("mkdir .ssh");
    let key = keygen(&home.path().join(".ssh/id_ecdsa"), "ecdsa", "");
    let sshd = Sshd::start(home.path(), &[&key]);
    write_known_hosts(home.path(), &[sshd.known_hosts_line()]);
    assert_connects(&sshd, &options(home.path(), &[])).await;
}

#[tokio::test]
async fn agent_keys() {
    let home = tempdir();
    let key = keygen(&home.path().join("agent_key"), "ed25519", "");
    let rsa = keygen(&home.path().join("agent_rsa"), "rsa", "");
    let sshd = Sshd::start(home.path(), &[&rsa]);
    write_known_hosts(home.path(), &[sshd.known_hosts_line()]);
    let agent = SshAgent::start(home.path());
    agent.add(&key);
    agent.add(&rsa);
    std::fs::remove_file(&rsa).expect("removing the file: the agent alone holds it");
    let mut opts = options(home.path(), &[]);
    opts.agent = Agent::Socket(agent.socket.clone());
    assert_connects(&sshd, &opts).await;
}

#[tokio::test]
async fn encrypted_key_without_agent_says_to_load_it() {
    let home = tempdir();
    let key = keygen(&home.path().join("id_locked"), "ed25519", "secret words");
    let sshd = Sshd::start(home.path(), &[&key]);
    write_known_hosts(home.path(), &[sshd.known_hosts_line()]);
    let err = SshSession::connect(&sshd.target(), &options(home.path(), &[&key]))
        .await
        .expect_err("an encrypted key cannot be used without an agent");
    let msg = err.to_string();
    assert!(matches!(err, SshError::EncryptedKey { .. }), "{msg}");
    assert!(msg.contains(&key.display().to_string()), "{msg}");
    assert!(
        msg.contains("ssh-add") && msg.contains("ssh-agent"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("root@127.0.0.1:{}", sshd.port)),
        "{msg}"
    );
}

#[tokio::test]
async fn encrypted_key_loaded_in_agent_works() {
    let home = tempdir();
    let key = keygen(&home.path().join("id_locked"), "ed25519", "secret words");
    let sshd = Sshd::start(home.path(), &[&key]);
    write_known_hosts(home.path(), &[sshd.known_hosts_line()]);
    let agent = SshAgent::start(home.path());
    agent.add_encrypted(&key, "secret words");
    let mut opts = options(home.path(), &[&key]);
    opts.agent = Agent::Socket(agent.socket.clone());
    assert_connects(&sshd, &opts).await;
}

#[tokio::test]
async fn wrong_key_lists_what_was_tried() {
    let home = tempdir();
    let good = keygen(&home.path().join("good"), "ed25519", "");
    let bad = keygen(&home.path().join("bad"), "ed25519", "");
    let sshd = Sshd::start(home.path(), &[&good]);
    write_known_hosts(home.path(), &[sshd.known_hosts_line()]);
    let agent = SshAgent::start(home.path());
    let other = keygen(&home.path().join("other"), "ecdsa", "");
    agent.add(&other);
    let mut opts = options(home.path(), &[&bad]);
    opts.agent = Agent::Socket(agent.socket.clone());
    let err = SshSession::connect(&sshd.target(), &opts)
        .await
        .expect_err("no accepted key");
    let msg = err.to_string();
    assert!(matches!(err, SshError::AuthFailed { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!(
            "authentication failed for root@127.0.0.1:{}",
            sshd.port
        )),
        "{msg}"
    );
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains(&common::fingerprint(&other)), "{msg}");
    assert!(!msg.contains("PRIVATE"), "{msg}");
}

#[tokio::test]
async fn unreachable_agent_is_noted() {
    let home = tempdir();
    let key = keygen(&home.path().join("k"), "ed25519", "");
    let sshd = Sshd::start(home.path(), &[]);
    write_known_hosts(home.path(), &[sshd.known_hosts_line()]);
    let mut opts = options(home.path(), &[&key]);
    opts.agent = Agent::Socket(Path::new("/nonexistent/agent.sock").to_path_buf());
    let err = SshSession::connect(&sshd.target(), &opts)
        .await
        .expect_err("no accepted key");
    assert!(err.to_string().contains("/nonexistent/agent.sock"), "{err}");
}
