//! Handshake at every client version 1.21 … 1.38 against every real peer,
//! each followed by a small sequence of operations.

use crate::common;

use nix_wire::daemon::{ProtocolVersion, Trust};
use test_support::{peers, TempStore};

#[tokio::test]
async fn every_version_against_every_peer() {
    let nar = common::hello_nar();
    let info = common::hello_info();
    let missing =
        nix_wire::StorePath::parse("/nix/store/00000000000000000000000000000000-nope").unwrap();
    for peer in peers() {
        for minor in 21..=38u8 {
            let store = TempStore::new();
            let mut c = common::store_client(&store, &peer, minor).await;
            let daemon = c.daemon_version();
            assert_eq!(
                c.version(),
                daemon.min(ProtocolVersion::new(1, minor)),
                "{}",
                peer.name
            );
            let v = c.version();
            assert_eq!(
                c.nix_version().is_some(),
                v.at_least(33),
                "{} at {v}",
                peer.name
            );
            if let Some(nv) = c.nix_version() {
                assert!(
                    peer.name.ends_with(&nv[..nv.rfind('.').unwrap()]),
                    "{} says {nv}",
                    peer.name
                );
            }
            assert_eq!(c.trust().is_some(), v.at_least(35));
            if v.at_least(35) {
                assert_eq!(c.trust(), Some(Trust::Trusted));
            }
            assert!(c.features().is_empty());

            assert!(!c.is_valid_path(&info.path).await.unwrap());
            assert_eq!(c.query_path_info(&missing).await.unwrap(), None);
            c.add_temp_root(&info.path).await.unwrap();
            c.add_to_store_nar(&info, &nar[..], false, false)
                .await
                .unwrap();
            assert!(c.is_valid_path(&info.path).await.unwrap());
            let got = c.query_path_info(&info.path).await.unwrap().expect("valid");
            assert_eq!(
                (got.nar_hash, got.nar_size, &got.ca),
                (info.nar_hash, info.nar_size, &info.ca)
            );
            let valid = c
                .query_valid_paths([&info.path, &missing], false)
                .await
                .unwrap();
            assert_eq!(valid, std::collections::BTreeSet::from([info.path.clone()]));
            let mut back = Vec::new();
            c.nar_from_path(&info.path, &mut back).await.unwrap();
            assert_eq!(back, nar);
            eprintln!(
                "{}: client 1.{minor} → negotiated {v} (daemon {daemon}) ok",
                peer.name
            );
        }
    }
}

#[tokio::test]
async fn feature_exchange_at_1_38() {
    for peer in peers() {
        let store = TempStore::new();
        let t = nix_wire::daemon::spawn_stdio(store.daemon_command(&peer)).unwrap();
        let config = nix_wire::daemon::ClientConfig {
            features: vec!["no-such-feature".into()],
            ..Default::default()
        };
        let c = nix_wire::daemon::DaemonClient::connect(t, config)
            .await
            .unwrap();
        // Neither 2.8 (no exchange) nor 2.26 (empty set) offers it.
        assert!(c.features().is_empty(), "{}", peer.name);
    }
}

#[tokio::test]
async fn client_versions_outside_the_range_are_refused() {
    for minor in [20, 39] {
        let config = common::config(minor);
        let stream = common::fake_daemon(common::Script::handshake_2_8());
        let e = nix_wire::daemon::DaemonClient::connect(stream, config)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("outside the supported range"), "{e}");
    }
}
