//! The remote-command layer against a real node (Debian 13, OpenSSH, bash
//! as root's login shell, dash as /bin/sh): arbitrary strings survive
//! quoting through both shells, a hung command is stopped on the node at
//! its timeout, output past the cap is refused, stdin carries input, our
//! nix.conf block is written once and kept.

use std::time::{Duration, Instant};

use deploy_remote::nix_conf::{self, Change};
use deploy_remote::{quote, run, run_with, CommandError, Limits};
use deploy_ssh::{SshError, SshSession, Target};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use test_cluster::{Cluster, ClusterSpec, NodeKind};

async fn session(cluster: &Cluster) -> SshSession {
    let node = &cluster.nodes()[0];
    SshSession::connect(&Target::parse(node.name()).unwrap(), &cluster.ssh_options())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_strings_round_trip_through_the_nodes_shells() {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let session = session(&cluster).await;
    let hostile = [
        "",
        " ",
        "'",
        "''",
        "\"",
        "\\",
        "$(id)",
        "`id`",
        "${HOME}",
        "a b\tc\nd",
        "#x",
        "-e",
        "--",
        "*",
        "~",
        ";",
        "&&",
        "|",
        "!",
        "é ünï 🎉",
        "'\\''",
        "\r\n",
        "$0",
        "%s",
    ];
    let mut runner = TestRunner::deterministic();
    // Any text but NUL (which no argv can hold), up to 64 characters.
    let strategy = proptest::collection::vec(r"[^\x00]{0,64}", 128);
    let mut batches = vec![hostile.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for _ in 0..4 {
        batches.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    for words in batches {
        let quoted: Vec<String> = words.iter().map(|w| quote(w)).collect();
        let script = format!("printf '%s\\0' {}", quoted.join(" "));
        let out = run_with(&session, "printf", &script, &[], Limits::DEFAULT)
            .await
            .unwrap();
        let back: Vec<String> = out
            .split(|&b| b == 0)
            .map(|w| String::from_utf8(w.to_vec()).unwrap())
            .collect();
        // printf ends every word with NUL: one empty piece after the last.
        assert_eq!(&back[..back.len() - 1], &words[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_stop_the_command_on_the_node_and_output_is_capped() {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];
    let session = session(&cluster).await;

    let started = Instant::now();
    let limits = Limits::DEFAULT.with_timeout(Duration::from_secs(2));
    let err = run_with(&session, "a hung step", "sleep 4321", &[], limits)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::TimedOut { command, seconds: 2, .. } if command == "a hung step"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string().contains("did not finish within 2 s"),
        "{err}"
    );
    // Nothing is left running there.
    let left = node.run("pgrep -f '[s]leep 4321'").unwrap();
    assert!(!left.status.success(), "the command still runs on the node");

    let capped = Limits {
        max_output: 1 << 20,
        ..Limits::DEFAULT
    };
    let err = run_with(&session, "chatty", "head -c 5000000 /dev/zero", &[], capped)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::Ssh(SshError::TooMuchOutput { limit, .. }) if *limit == 1 << 20),
        "{err}"
    );

    // Input goes through stdin; a failure names the step, status and stderr.
    let out = run_with(&session, "wc", "wc -c", &[7u8; 70_000], Limits::DEFAULT)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out).trim(), "70000");
    let err = run(&session, "echo oops >&2; exit 3").await.unwrap_err();
    assert!(
        matches!(&err, CommandError::Failed { status, stderr, .. } if status == "exit code 3" && stderr == "oops"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_nix_conf_block_is_written_once_and_the_users_lines_kept() {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];
    let session = session(&cluster).await;
    let before = node.run_ok("cat /etc/nix/nix.conf").unwrap();
    let set = |text: &str| nix_conf::with_setting(text, "connect-timeout", "7");
    assert_eq!(
        nix_conf::edit(&session, set).await.unwrap(),
        Change::Changed
    );
    assert_eq!(
        nix_conf::edit(&session, set).await.unwrap(),
        Change::Unchanged
    );
    let after = node.run_ok("cat /etc/nix/nix.conf").unwrap();
    assert!(after.starts_with(&before), "{after}");
    assert!(
        after.ends_with("# BEGIN nix-deploy\nconnect-timeout = 7\n# END nix-deploy\n"),
        "{after}"
    );
}
