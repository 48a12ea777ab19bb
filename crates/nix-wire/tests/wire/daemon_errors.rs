//! Error paths: malformed daemon output (fake daemons over an in-memory
//! duplex), and real daemons refusing requests.

use crate::common;

use common::{fake_client, Script};
use nix_wire::daemon::{
    connect_socket, spawn_stdio, ClientOptions, DaemonClient, DaemonEvent, Error, Field,
};
use nix_wire::wire::WireError;
use nix_wire::{Sha256Hash, StorePath};
use test_support::{peers, TempStore};

fn missing() -> StorePath {
    StorePath::parse("/nix/store/00000000000000000000000000000000-nope").unwrap()
}

const STDERR_ERROR: u64 = 0x6378_7470;

// ---- fake daemons -------------------------------------------------------

#[tokio::test]
async fn unknown_stderr_code_names_it_in_hex_and_poisons() {
    let mut c = fake_client(Script::handshake_2_8().u64(0xdead_beef))
        .await
        .unwrap();
    let e = c.is_valid_path(&missing()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("unknown STDERR message code 0xdeadbeef"),
        "{e}"
    );
    assert!(c.is_poisoned());
    assert!(matches!(
        c.is_valid_path(&missing()).await,
        Err(Error::Poisoned)
    ));
}

#[tokio::test]
async fn truncated_stream_is_an_eof_error() {
    let mut c = fake_client(Script::handshake_2_8().last().raw(&[1, 0, 0]))
        .await
        .unwrap();
    let e = c.is_valid_path(&missing()).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Wire {
                source: WireError::Eof(_),
                ..
            }
        ),
        "{e:?}"
    );
    // Truncated during the handshake, too.
    let e = fake_client(Script::default().u64(0x6478_696f).raw(&[0x22]))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::Wire {
                op: "handshake",
                source: WireError::Eof(_)
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn absurd_lengths_and_counts_fail_before_allocating() {
    let mut c = fake_client(Script::handshake_2_8().last().u64(1).u64(1 << 60))
        .await
        .unwrap();
    let e = c.query_valid_paths([&missing()], false).await.unwrap_err();
    assert!(
        e.to_string().contains(
            "daemon sent a store path of 1152921504606846976 bytes, limit 1024 (protocol desync?)"
        ),
        "{e}"
    );
    let mut c = fake_client(Script::handshake_2_8().last().u64(1 << 60))
        .await
        .unwrap();
    let e = c.query_valid_paths([&missing()], false).await.unwrap_err();
    assert!(
        matches!(e, Error::Wire { source: WireError::TooMany { count, .. }, .. } if count == 1 << 60),
        "{e:?}"
    );
    // A log line claiming 2^63 bytes.
    let mut c = fake_client(Script::handshake_2_8().u64(0x6f6c_6d67).u64(1 << 63))
        .await
        .unwrap();
    let e = c.is_valid_path(&missing()).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Wire {
                source: WireError::TooLong { .. },
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn bad_padding_bad_bools_and_bad_paths_are_rejected() {
    let p = "/nix/store/00000000000000000000000000000000-nope1"; // 49 bytes
    let mut padded = Script::handshake_2_8().last().u64(1).str(p).0;
    let at = padded.len() - 1;
    padded[at] = 7; // the last of the 7 padding bytes
    let mut c = fake_client(Script(padded)).await.unwrap();
    let e = c.query_valid_paths([&missing()], false).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Wire {
                source: WireError::BadPadding,
                ..
            }
        ),
        "{e:?}"
    );

    let mut c = fake_client(Script::handshake_2_8().last().u64(2))
        .await
        .unwrap();
    let e = c.query_path_info(&missing()).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Wire {
                source: WireError::BadBool(2),
                ..
            }
        ),
        "{e:?}"
    );

    let mut c = fake_client(Script::handshake_2_8().last().u64(1).str("/tmp/evil"))
        .await
        .unwrap();
    let e = c.query_valid_paths([&missing()], false).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Wire {
                source: WireError::BadStorePath(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(StorePath::parse("/nix/store/not-a-store-path").is_err());
}

#[tokio::test]
async fn old_daemons_and_wrong_magic_are_refused_clearly() {
    let e = fake_client(Script::default().u64(0x6478_696f).u64(0x114))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, Error::VersionTooOld(v) if v.to_string() == "1.20"));
    assert!(
        e.to_string().contains("1.20") && e.to_string().contains("Nix 2.3 is the oldest supported"),
        "{e}"
    );
    let e = fake_client(Script::default().raw(b"Welcome!"))
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("printing to the daemon's stdout"),
        "{e}"
    );
}

#[tokio::test]
async fn old_style_errors_are_surfaced_without_ansi() {
    let script = Script::handshake_2_3()
        .u64(STDERR_ERROR)
        .str("\x1b[31;1merror:\x1b[0m path '\x1b[35;1m/nix/store/x\x1b[0m' is not valid")
        .u64(1);
    let mut c = DaemonClient::connect(common::fake_daemon(script), common::config(21))
        .await
        .unwrap();
    let e = c.is_valid_path(&missing()).await.unwrap_err();
    let d = e.daemon_error().expect("daemon error");
    assert_eq!(d.exit_status, Some(1));
    assert!(d.raw_message.contains('\x1b'));
    assert_eq!(d.to_string(), "path '/nix/store/x' is not valid");
    assert!(d.message().starts_with("error: "));
    assert!(!e.to_string().contains('\x1b'));
}

#[tokio::test]
async fn structured_errors_carry_traces_and_double_errors_poison() {
    let error = Script::default()
        .u64(STDERR_ERROR)
        .str("Error")
        .u64(0)
        .str("Error")
        .str("boom")
        .u64(0)
        .u64(1)
        .u64(0)
        .str("while doing \x1b[1mthings\x1b[0m");
    let script = Script::handshake_2_8().raw(&error.0).raw(&error.0);
    let mut c = fake_client(script).await.unwrap();
    let e = c.is_valid_path(&missing()).await.unwrap_err();
    let d = e.daemon_error().unwrap();
    assert_eq!(d.traces(), ["while doing things"]);
    assert_eq!(d.to_string(), "boom\n  … while doing things");
    // A fatal error (sent twice, then EOF) leaves the connection unusable.
    assert!(c.is_poisoned());
    assert!(matches!(
        c.is_valid_path(&missing()).await,
        Err(Error::Poisoned)
    ));
}

#[tokio::test]
async fn a_daemon_silent_in_the_middle_of_an_operation_times_out() {
    let config = nix_wire::daemon::ClientConfig {
        idle_timeout: Some(std::time::Duration::from_millis(500)),
        ..Default::default()
    };
    let stream = common::fake_daemon_then_silence(Script::handshake_2_8());
    let mut c = DaemonClient::connect(stream, config).await.unwrap();
    let started = std::time::Instant::now();
    let err = c.is_valid_path(&missing()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("neither sent nor took a byte for 500ms"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(c.is_poisoned());
}

#[tokio::test]
async fn activities_and_logs_reach_the_event_sink() {
    let script = Script::handshake_2_8()
        .u64(0x5354_5254)
        .u64(7)
        .u64(3)
        .u64(105)
        .str("building")
        .u64(2)
        .u64(0)
        .u64(42)
        .u64(1)
        .str("x")
        .u64(0)
        .u64(0x6f6c_6d67)
        .str("hello\n")
        .u64(0x5253_4c54)
        .u64(7)
        .u64(105)
        .u64(0)
        .u64(0x5354_4f50)
        .u64(7)
        .last()
        .u64(1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = nix_wire::daemon::ClientConfig {
        events: Some(tx),
        ..Default::default()
    };
    let mut c = DaemonClient::connect(common::fake_daemon(script), config)
        .await
        .unwrap();
    assert!(c.is_valid_path(&missing()).await.unwrap());
    let mut got = Vec::new();
    while let Ok(e) = rx.try_recv() {
        got.push(e);
    }
    assert_eq!(
        got,
        [
            DaemonEvent::StartActivity {
                id: 7,
                level: 3,
                kind: 105,
                text: "building".into(),
                fields: vec![Field::Int(42), Field::String("x".into())],
                parent: 0
            },
            DaemonEvent::Log("hello\n".into()),
            DaemonEvent::Result {
                id: 7,
                kind: 105,
                fields: vec![]
            },
            DaemonEvent::StopActivity { id: 7 },
        ]
    );
    // An unknown field type is a protocol error.
    let bad = Script::handshake_2_8()
        .u64(0x5253_4c54)
        .u64(7)
        .u64(105)
        .u64(1)
        .u64(9);
    let e = fake_client(bad)
        .await
        .unwrap()
        .is_valid_path(&missing())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("unknown activity field type 9"),
        "{e}"
    );
}

// ---- transports ---------------------------------------------------------

#[tokio::test]
async fn missing_socket_says_what_to_do() {
    let e = connect_socket(Some("/tmp/nonexistent-nix-socket".as_ref()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoDaemon { .. }));
    assert!(e.to_string().contains("apt-get install nix-bin"), "{e}");
}

#[tokio::test]
async fn a_dying_daemon_process_reports_its_stderr() {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "echo 'error: cannot open store' >&2; exit 3"]);
    let e = DaemonClient::connect(spawn_stdio(cmd).unwrap(), Default::default())
        .await
        .err()
        .unwrap();
    let text = e.to_string();
    assert!(
        text.contains("cannot open store") && text.contains("exit status: 3"),
        "{text}"
    );
}

// ---- real daemons -------------------------------------------------------

#[tokio::test]
async fn real_daemon_errors_keep_the_connection_usable() {
    let nar = common::hello_nar();
    for peer in peers() {
        for minor in [21, 38] {
            let store = TempStore::new();
            let mut c = common::store_client(&store, &peer, minor).await;
            c.set_options(&ClientOptions::default().without_substituters())
                .await
                .unwrap();
            // Path not in the store.
            let e = c
                .nar_from_path(&missing(), &mut Vec::new())
                .await
                .unwrap_err();
            assert!(matches!(e, Error::PathNotValid(_)), "{e:?}");
            let e = c.ensure_path(&missing()).await.unwrap_err();
            assert!(e.daemon_error().is_some(), "{e:?}");
            assert!(!e.to_string().contains('\x1b'));
            // Wrong narHash: the daemon's own text comes through.
            let mut info = common::hello_info();
            info.nar_hash = Sha256Hash::digest(b"something else");
            let e = c
                .add_to_store_nar(&info, &nar[..], false, true)
                .await
                .unwrap_err();
            let msg = e.daemon_error().expect("daemon error").message();
            assert!(msg.contains("hash mismatch"), "{}: {msg}", peer.name);
            // NAR sources of the wrong length abort the upload.
            let info = common::hello_info();
            let e = c
                .add_to_store_nar(&info, &nar[..100], false, true)
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::NarSizeMismatch { got: 100, .. }),
                "{e:?}"
            );
            let long = [&nar[..], b"trailing"].concat();
            let e = c
                .add_to_store_nar(&info, &long[..], false, true)
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::NarSizeMismatch { more: "+", .. }),
                "{e:?}"
            );
            let e = c
                .add_multiple_to_store([(info.clone(), &long[..])], false, true)
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::NarSizeMismatch { more: "+", .. }),
                "{e:?}"
            );
            assert!(!c.is_poisoned());
            assert!(
                !c.is_valid_path(&info.path).await.unwrap(),
                "{} at 1.{minor}",
                peer.name
            );
            c.add_to_store_nar(&info, &nar[..], false, true)
                .await
                .unwrap();
            assert!(c.is_valid_path(&info.path).await.unwrap());
            let missing = c
                .query_missing(&[missing(), info.path.clone()])
                .await
                .unwrap();
            assert_eq!(missing.unknown.len(), 1);
        }
    }
}

#[tokio::test]
async fn fatal_daemon_errors_poison_the_connection() {
    let nar = common::hello_nar();
    for peer in peers() {
        for minor in [21, 38] {
            let store = TempStore::new();
            let mut c = common::store_client(&store, &peer, minor).await;
            let mut info = common::hello_info();
            info.ca = Some("garbage".into());
            let e = c
                .add_to_store_nar(&info, &nar[..], false, true)
                .await
                .unwrap_err();
            assert!(
                e.daemon_error().is_some(),
                "{} at 1.{minor}: {e:?}",
                peer.name
            );
            assert!(c.is_poisoned(), "{} at 1.{minor}", peer.name);
            assert!(matches!(
                c.is_valid_path(&info.path).await,
                Err(Error::Poisoned)
            ));
        }
    }
}

#[tokio::test]
async fn add_multiple_with_an_already_valid_path() {
    let cl = common::closure();
    let first: Vec<_> = cl.nars[..3].to_vec();
    for peer in peers() {
        let store = TempStore::new();
        let mut c = common::store_client(&store, &peer, 38).await;
        c.add_to_store_nar(&first[0].0, &first[0].1[..], false, true)
            .await
            .unwrap();
        let items = first.iter().map(|(i, n)| (i.clone(), &n[..]));
        let res = c.add_multiple_to_store(items, false, true).await;
        let paths: Vec<_> = first.iter().map(|(i, _)| &i.path).collect();
        if c.daemon_version().at_least(35) {
            // Nix ≥ 2.18 skips the NAR of an already-valid path.
            res.unwrap();
        } else {
            // Nix 2.8 (bug #6253): a typed error; retry what is missing.
            let e = res.unwrap_err();
            assert!(
                matches!(e, Error::AlreadyValidRace { .. }),
                "{}: {e:?}",
                peer.name
            );
            assert!(e.to_string().contains("retry"), "{e}");
            assert!(!c.is_poisoned());
            let valid = c.query_valid_paths(paths.clone(), false).await.unwrap();
            let rest: Vec<_> = first
                .iter()
                .filter(|(i, _)| !valid.contains(&i.path))
                .collect();
            assert_eq!(
                rest.len(),
                2,
                "{}: the paths before the valid one stay",
                peer.name
            );
            let rest = rest.into_iter().map(|(i, n)| (i.clone(), &n[..]));
            c.add_multiple_to_store(rest, false, true).await.unwrap();
        }
        assert_eq!(
            c.query_valid_paths(paths, false).await.unwrap().len(),
            3,
            "{}",
            peer.name
        );
    }
}
