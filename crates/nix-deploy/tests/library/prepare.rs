//! `prepare` on throwaway nodes: what a node has, trusting our key twice
//! changes nix.conf once, and a node without Nix gets the clear error.

use deploy_ssh::{SshSession, Target};
use nix_deploy::prepare::{prepare, PrepareError};
use nix_deploy::trust::TrustChange;
use nix_wire::signing::SecretKey;
use test_cluster::{Cluster, ClusterSpec, NodeKind};

async fn session(cluster: &Cluster, node: &str) -> SshSession {
    let options = cluster.ssh_options();
    SshSession::connect(&Target::parse(node).unwrap(), &options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_reports_trusts_once_and_refuses_a_node_without_nix() {
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("nix", NodeKind::Trixie)
            .node("bare", NodeKind::Bare),
    )
    .unwrap();
    let key = SecretKey::from_seed("nix-deploy-test-1", [7; 32])
        .unwrap()
        .public_key();

    let node = cluster.node("nix").unwrap();
    node.start_nix_daemon().unwrap();
    let s = session(&cluster, "nix").await;
    let first = prepare(&s, Some(&key), None, &Default::default())
        .await
        .unwrap();
    assert_eq!(first.facts.user, "root");
    assert!(first.facts.is_root);
    assert_eq!(first.facts.nix_version.as_deref(), Some("2.26.3"));
    assert!(first.facts.daemon_socket);
    assert_eq!(first.facts.trusted, Some(true));
    assert_eq!(first.trusted_key, Some(TrustChange::Changed));
    let conf = node.run_ok("cat /etc/nix/nix.conf").unwrap();
    assert!(conf.contains(&key.to_string()), "{conf}");
    let again = prepare(&s, Some(&key), None, &Default::default())
        .await
        .unwrap();
    assert_eq!(again.trusted_key, Some(TrustChange::Unchanged));
    assert_eq!(
        node.run_ok("cat /etc/nix/nix.conf").unwrap(),
        conf,
        "same bytes"
    );

    // Settings go into our block once; the user's lines stay.
    node.run_ok("printf '# mine\\nkeep-outputs = true\\n' >> /etc/nix/nix.conf")
        .unwrap();
    let settings = [(
        "extra-experimental-features".to_owned(),
        "nix-command flakes".to_owned(),
    )]
    .into_iter()
    .collect();
    let set = prepare(&s, None, None, &settings).await.unwrap();
    assert_eq!(set.settings, Some(TrustChange::Changed));
    let conf = node.run_ok("cat /etc/nix/nix.conf").unwrap();
    assert!(conf.contains("# mine\nkeep-outputs = true\n"), "{conf}");
    assert!(
        conf.contains("extra-experimental-features = nix-command flakes\n"),
        "{conf}"
    );
    let again = prepare(&s, None, None, &settings).await.unwrap();
    assert_eq!(again.settings, Some(TrustChange::Unchanged));
    assert!(!again.changed());
    assert_eq!(
        node.run_ok("cat /etc/nix/nix.conf").unwrap(),
        conf,
        "same bytes"
    );

    // Settings naming the trusted keys (a binary cache's) and the
    // deployer's key: once, then nothing to do.
    let cache_key = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    let settings = [("extra-trusted-public-keys".to_owned(), cache_key.to_owned())]
        .into_iter()
        .collect();
    let first = prepare(&s, Some(&key), None, &settings).await.unwrap();
    assert_eq!(first.settings, Some(TrustChange::Changed));
    assert_eq!(first.trusted_key, Some(TrustChange::Unchanged), "already");
    let conf = node.run_ok("cat /etc/nix/nix.conf").unwrap();
    assert!(
        conf.contains(&format!("extra-trusted-public-keys = {cache_key} {key}\n")),
        "{conf}"
    );
    assert!(
        !conf.contains("extra-experimental-features"),
        "the inventory no longer sets it: {conf}"
    );
    let again = prepare(&s, Some(&key), None, &settings).await.unwrap();
    assert_eq!(
        (again.settings, again.trusted_key),
        (Some(TrustChange::Unchanged), Some(TrustChange::Unchanged))
    );
    assert!(!again.changed());
    assert_eq!(
        node.run_ok("cat /etc/nix/nix.conf").unwrap(),
        conf,
        "same bytes"
    );

    // The cache taken out of the inventory: its key goes, the deployer's
    // stays, the user's lines stay; then nothing to do.
    let none = Default::default();
    let out = prepare(&s, Some(&key), None, &none).await.unwrap();
    assert_eq!(out.settings, Some(TrustChange::Changed));
    let conf = node.run_ok("cat /etc/nix/nix.conf").unwrap();
    assert!(
        conf.contains(&format!("extra-trusted-public-keys = {key}\n")),
        "{conf}"
    );
    assert!(!conf.contains(cache_key), "{conf}");
    assert!(conf.contains("# mine\nkeep-outputs = true\n"), "{conf}");
    let again = prepare(&s, Some(&key), None, &none).await.unwrap();
    assert_eq!((again.settings, again.changed()), (None, false));

    // An unprivileged user is not trusted (the node's trusted-users is root).
    let user = session(&cluster, "deploy@nix").await;
    let facts = nix_deploy::prepare::inspect(&user).await.unwrap();
    assert_eq!((facts.is_root, facts.trusted), (false, Some(false)));
    node.run_ok("printf 'trusted-users = root @deploy\\n' >> /etc/nix/nix.conf")
        .unwrap();
    let facts = nix_deploy::prepare::inspect(&user).await.unwrap();
    assert_eq!(facts.trusted, Some(true), "trusted through its group");

    let bare = session(&cluster, "bare").await;
    let err = prepare(&bare, Some(&key), None, &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PrepareError::NixMissing { .. }), "{err}");
    assert!(err.to_string().contains("apt-get install nix-bin"), "{err}");
}
