//! `ssh_config` against real sshd instances: aliases, first-match-wins,
//! IdentitiesOnly, UserKnownHostsFile, ProxyJump (one hop and a chain).

use crate::common;

use std::path::Path;

use common::{keygen, options, tempdir, write_known_hosts, SshAgent, Sshd};
use deploy_ssh::{Agent, ConfigFile, SshError, SshOptions, SshSession, Target};

/// Options reading `config` from `home`, nothing else preset.
fn config_options(home: &Path, config: &str) -> SshOptions {
    let path = home.join("ssh_config");
    std::fs::write(&path, config).expect("writing ssh_config");
    SshOptions {
        config_file: ConfigFile::Path(path),
        known_hosts_files: Vec::new(),
        identity_files: Vec::new(),
        default_user: None,
        ..options(home, &[])
    }
}

async fn hello(target: &str, opts: &SshOptions) -> Result<SshSession, SshError> {
    let session = SshSession::connect(&Target::parse(target)?, opts).await?;
    let out = session.run("echo hello").await?;
    assert_eq!(out.stdout, b"hello\n");
    Ok(session)
}

#[tokio::test]
async fn alias_with_hostname_user_port_identityfile() {
    let home = tempdir();
    std::fs::create_dir_all(home.path().join("keys")).expect("mkdir");
    let key = keygen(&home.path().join("keys/127.0.0.1.key"), "ed25519", "");
    let sshd = Sshd::start(home.path(), &[&key]);
    std::fs::write(
        home.path().join("custom_known_hosts"),
        sshd.known_hosts_line(),
    )
    .expect("write");
    let port = sshd.port;
    let opts = config_options(
        home.path(),
        &format!(
            "# global options come first\n\
             UserKnownHostsFile ~/custom_known_hosts\n\
             Host other\n    Port 1\n\
             Host node1 mynode !nothing\n    HostName 127.0.0.1\n    User=root\n    Port {port}\n    IdentityFile ~/keys/%h.key\n\
             Host *\n    Port 1\n    User nobody\n    IdentityFile ~/keys/missing\n"
        ),
    );
    let session = match hello("mynode", &opts).await {
        Ok(s) => s,
        Err(e) => panic!("{e}\nsshd log:\n{}", sshd.log()),
    };
    assert_eq!(session.user(), "root");
    assert_eq!(session.host(), "127.0.0.1");
    assert_eq!(session.port(), port);
    // The alias in a URL form works too, and an explicit user wins.
    let err = hello("ssh://nosuchuser@mynode", &opts)
        .await
        .expect_err("no such user");
    assert!(
        err.to_string()
            .contains(&format!("nosuchuser@127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn identities_only_limits_agent_keys() {
    let home = tempdir();
    let in_agent = keygen(&home.path().join("in_agent"), "ed25519", "");
    let configured = keygen(&home.path().join("configured"), "ed25519", "");
    let sshd = Sshd::start(home.path(), &[&in_agent]);
    write_known_hosts(home.path(), &[sshd.known_hosts_line()]);
    let agent = SshAgent::start(home.path());
    agent.add(&in_agent);
    let config = |only: &str| {
        format!(
            "Host node\n HostName 127.0.0.1\n Port {}\n User root\n IdentityFile ~/configured\n IdentitiesOnly {only}\n UserKnownHostsFile ~/known_hosts\n",
            sshd.port
        )
    };
    let mut opts = config_options(home.path(), &config("no"));
    opts.agent = Agent::Socket(agent.socket.clone());
    hello("node", &opts)
        .await
        .expect("agent key offered without IdentitiesOnly");

    let mut opts = config_options(home.path(), &config("yes"));
    opts.agent = Agent::Socket(agent.socket.clone());
    match hello("node", &opts).await {
        Err(SshError::AuthFailed {
            agent_keys, files, ..
        }) => {
            assert!(agent_keys.is_empty(), "{agent_keys:?}");
            assert_eq!(files, vec![configured.clone()]);
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }

    // With IdentitiesOnly, an agent key matching a configured file is used.
    agent.add(&configured);
    std::fs::write(&sshd.authorized_keys, common::public_key(&configured))
        .expect("write authorized_keys");
    hello("node", &opts)
        .await
        .expect("matching agent key offered");
}

/// Two servers: `jump` on one port, the node on another, reachable through
/// the jump's direct-tcpip forwarding.
struct JumpPair {
    home: tempfile::TempDir,
    jump: Sshd,
    node: Sshd,
}

impl JumpPair {
    fn new() -> JumpPair {
        let home = tempdir();
        let key = keygen(&home.path().join("id"), "ed25519", "");
        let jump = Sshd::start_debug(home.path(), &[&key]);
        let node = Sshd::start(home.path(), &[&key]);
        write_known_hosts(
            home.path(),
            &[jump.known_hosts_line(), node.known_hosts_line()],
        );
        JumpPair { home, jump, node }
    }

    fn options(&self, proxy_jump: &str) -> SshOptions {
        config_options(
            self.home.path(),
            &format!(
                "Host node\n HostName 127.0.0.1\n Port {}\n ProxyJump {proxy_jump}\n\
                 Host jump\n HostName 127.0.0.1\n Port {}\n\
                 Host *\n User root\n IdentityFile ~/id\n UserKnownHostsFile ~/known_hosts\n",
                self.node.port, self.jump.port
            ),
        )
    }

    fn tunnels_opened(&self) -> usize {
        let needle = format!("target 127.0.0.1 port {}", self.node.port);
        self.jump.log().matches(&needle).count()
    }
}

#[tokio::test]
async fn proxy_jump_through_an_alias() {
    let pair = JumpPair::new();
    let session = match hello("node", &pair.options("jump")).await {
        Ok(s) => s,
        Err(e) => panic!("{e}\njump log:\n{}", pair.jump.log()),
    };
    assert_eq!(session.port(), pair.node.port);
    assert_eq!(pair.tunnels_opened(), 1, "{}", pair.jump.log());
    // Several channels on the tunnelled session.
    let (a, b) = tokio::join!(session.run("echo a"), session.run("echo b"));
    assert_eq!(a.expect("a").stdout, b"a\n");
    assert_eq!(b.expect("b").stdout, b"b\n");
}

#[tokio::test]
async fn proxy_jump_chain_and_explicit_hop() {
    let pair = JumpPair::new();
    let explicit = format!("root@127.0.0.1:{}", pair.jump.port);
    hello("node", &pair.options(&format!("jump,{explicit}")))
        .await
        .expect("two hops");
    // The second hop was reached through the first.
    let needle = format!("target 127.0.0.1 port {}", pair.jump.port);
    assert!(pair.jump.log().contains(&needle), "{}", pair.jump.log());
    assert_eq!(pair.tunnels_opened(), 1);
}

#[tokio::test]
async fn proxy_jump_errors_name_the_failing_hop() {
    let pair = JumpPair::new();
    // The jump host's key is unknown.
    write_known_hosts(pair.home.path(), &[pair.node.known_hosts_line()]);
    let err = hello("node", &pair.options("jump"))
        .await
        .expect_err("unknown jump key");
    assert!(
        matches!(&err, SshError::UnknownHostKey { port, .. } if *port == pair.jump.port),
        "{err}"
    );
    // The next hop is not listening.
    write_known_hosts(
        pair.home.path(),
        &[pair.jump.known_hosts_line(), pair.node.known_hosts_line()],
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let err = hello(&format!("127.0.0.1:{closed}"), &{
        let mut o = pair.options("jump");
        o.config_file = ConfigFile::Path(pair.home.path().join("ssh_config2"));
        std::fs::write(
            pair.home.path().join("ssh_config2"),
            format!(
                "Host 127.0.0.1\n ProxyJump root@127.0.0.1:{}\nHost *\n User root\n IdentityFile ~/id\n UserKnownHostsFile ~/known_hosts\n",
                pair.jump.port
            ),
        )
        .expect("write");
        o
    })
    .await
    .expect_err("closed port behind the jump");
    let msg = err.to_string();
    assert!(matches!(err, SshError::Tunnel { .. }), "{msg}");
    assert!(
        msg.contains(&format!("root@127.0.0.1:{}", pair.jump.port)),
        "{msg}"
    );
    assert!(msg.contains(&format!("127.0.0.1:{closed}")), "{msg}");
}
