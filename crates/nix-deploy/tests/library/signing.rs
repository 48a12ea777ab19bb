//! Trust without root-equivalence, on throwaway nodes running a Nix daemon
//! (Debian 13's Nix 2.26 and this machine's 2.8): after `trust_key` as
//! root, the unprivileged `deploy` user (not in `trusted-users`) pushes a
//! signed closure; the same push unsigned, or signed by a key the node does
//! not trust, is refused with our explanation; root unsigned still works.

use std::sync::Arc;

use deploy_ssh::{SshSession, Target, DEFAULT_DAEMON_COMMAND};
use nix_deploy::copy::{CopyError, CopyOptions, NodeStore};
use nix_deploy::keys;
use nix_deploy::remote::SshConnector;
use nix_deploy::trust::{trust_key, TrustChange};
use nix_wire::daemon::{connect_local, ClientConfig, DaemonClient, LocalTransport};
use nix_wire::signing::SecretKey;
use nix_wire::StorePath;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::fixture_closure;
use tokio_util::sync::CancellationToken;

async fn session(cluster: &Cluster, user: &str, node: &Node) -> SshSession {
    let options = cluster.ssh_options();
    let target = Target::parse(&format!("{user}@{}", node.name())).unwrap();
    SshSession::connect(&target, &options).await.unwrap()
}

async fn local() -> DaemonClient<LocalTransport> {
    DaemonClient::connect(connect_local().await.unwrap(), ClientConfig::default())
        .await
        .unwrap()
}

/// Copies the closure of `root` to `node` as `user`, signing with `key`.
async fn push(
    cluster: &Cluster,
    node: &Node,
    user: &str,
    root: &StorePath,
    key: Option<&Arc<SecretKey>>,
) -> Result<usize, CopyError> {
    let s = session(cluster, user, node).await;
    let mut store = NodeStore::open(SshConnector::new(Arc::new(s), DEFAULT_DAEMON_COMMAND))
        .await
        .unwrap();
    let options = CopyOptions {
        signing_key: key.cloned(),
        ..CopyOptions::default()
    };
    let r = store
        .copy_closure(
            &mut local().await,
            std::slice::from_ref(root),
            &options,
            None,
            &CancellationToken::new(),
        )
        .await?;
    Ok(r.sent_paths)
}

fn assert_refused(node: &Node, err: CopyError, key: Option<&Arc<SecretKey>>) {
    let text = err.to_string();
    assert!(
        matches!(err, CopyError::Untrusted { .. }),
        "{}: {text}",
        node.name()
    );
    assert!(text.contains("trusted-public-keys"), "{text}");
    if let Some(k) = key {
        assert!(text.contains(&k.public_key().to_string()), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_user_deploys_signed_paths_and_is_refused_without_a_trusted_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (key, generated) =
        keys::load_or_generate(&dir.path().join("signing-key"), "nix-deploy-test-1").unwrap();
    assert!(generated);
    let key = Arc::new(key);
    let stranger = Arc::new(SecretKey::from_seed("stranger-1", [9; 32]).unwrap());
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("trixie", NodeKind::Trixie)
            .node("local", NodeKind::LocalNix),
    )
    .unwrap();
    for (i, node) in cluster.nodes().iter().enumerate() {
        let fx = fixture_closure(5, &format!("signing-{i}"), 1);
        let root = StorePath::parse(&fx.root).unwrap();
        // A user's file: own lines, no final newline, a private mode.
        node.run_ok(
            "mkdir -p /etc/nix; printf '\\n# mine\\nmax-jobs = 3' >> /etc/nix/nix.conf; \
             chmod 640 /etc/nix/nix.conf",
        )
        .unwrap();
        let conf_before = node.run_ok("cat /etc/nix/nix.conf").unwrap();

        let admin = session(&cluster, "root", node).await;
        let public = key.public_key();
        assert_eq!(
            trust_key(&admin, &public).await.unwrap(),
            TrustChange::Changed
        );
        let conf = node.run_ok("cat /etc/nix/nix.conf").unwrap();
        assert!(conf.starts_with(&conf_before), "user lines kept: {conf}");
        assert_eq!(
            node.run_ok("stat -c %a /etc/nix/nix.conf").unwrap().trim(),
            "640"
        );
        assert_eq!(
            trust_key(&admin, &public).await.unwrap(),
            TrustChange::Unchanged
        );
        assert_eq!(node.run_ok("cat /etc/nix/nix.conf").unwrap(), conf);
        assert!(
            trust_key(&session(&cluster, "deploy", node).await, &public)
                .await
                .is_err(),
            "only root edits nix.conf"
        );
        node.stop_nix_daemon();
        node.start_nix_daemon().unwrap();
        let shown = node
            .run_ok("X=--extra-experimental-features; nix $X nix-command show-config 2>/dev/null || nix $X nix-command config show")
            .unwrap();
        assert!(
            shown.contains(&public.to_string()) && shown.contains("cache.nixos.org-1:"),
            "{}: our key added, the default kept: {shown}",
            node.name()
        );

        // Unsigned, and signed by a key the node does not trust: refused.
        let err = push(&cluster, node, "deploy", &root, None)
            .await
            .unwrap_err();
        assert_refused(node, err, None);
        let err = push(&cluster, node, "deploy", &root, Some(&stranger))
            .await
            .unwrap_err();
        assert_refused(node, err, Some(&stranger));
        assert!(node
            .run(&format!("nix-store -q --hash {}", fx.root))
            .unwrap()
            .stdout
            .is_empty());

        // Signed by the trusted deployer key: accepted.
        let sent = push(&cluster, node, "deploy", &root, Some(&key))
            .await
            .unwrap();
        assert_eq!(sent, 6, "{}", node.name());
        node.verify_store().unwrap();
        let sigs = node
            .run_ok(&format!(
                "nix --extra-experimental-features nix-command path-info --sigs -r {}",
                fx.root
            ))
            .unwrap();
        let ours = format!("{}:", key.name());
        assert_eq!(
            sigs.lines().filter(|l| l.contains(&ours)).count(),
            6,
            "{sigs}"
        );
        let got: std::collections::BTreeSet<String> = node
            .run_ok(&format!("nix-store -qR {}", fx.root))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(got, fx.closure);

        // Root without signing still works.
        let fx2 = fixture_closure(2, &format!("signing-root-{i}"), 1);
        let root2 = StorePath::parse(&fx2.root).unwrap();
        assert_eq!(push(&cluster, node, "root", &root2, None).await.unwrap(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_nodes_as_an_untrusted_user_switches_with_signing_and_fails_without() {
    use nix_deploy::deploy::{deploy_nodes, DeployOptions, Goal, NodePlan, NodeStatus};

    let key = Arc::new(SecretKey::from_seed("nix-deploy-rollout-1", [3; 32]).unwrap());
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("trixie", NodeKind::Trixie)
            .node("local", NodeKind::LocalNix),
    )
    .unwrap();
    for (i, node) in cluster.nodes().iter().enumerate() {
        let admin = session(&cluster, "root", node).await;
        trust_key(&admin, &key.public_key()).await.unwrap();
        node.start_nix_daemon().unwrap();
        let home = node.run_ok("getent passwd deploy | cut -d: -f6").unwrap();
        let profile = format!("{}/nix-deploy-profile", home.trim());
        let fx = fixture_closure(3, &format!("signing-rollout-{i}"), 1);
        let plan = NodePlan {
            name: node.name().to_owned(),
            target: Target::parse(&format!("deploy@{}", node.name())).unwrap(),
            profile_path: profile.clone(),
            profile: StorePath::parse(&fx.root).unwrap(),
            peer_address: None,
            peer_port: None,
        };
        let mut opts = DeployOptions {
            goal: Goal::Switch,
            ssh: cluster.ssh_options(),
            ..DeployOptions::default()
        };
        let cancel = CancellationToken::new();
        let unsigned = deploy_nodes(vec![plan.clone()], &opts, None, &cancel).await;
        let NodeStatus::Failed(e) = &unsigned[0].status else {
            panic!(
                "{}: an unsigned push by `deploy` cannot succeed",
                node.name()
            )
        };
        assert!(e.to_string().contains("trusted-public-keys"), "{e}");

        opts.copy.signing_key = Some(key.clone());
        let signed = deploy_nodes(vec![plan], &opts, None, &cancel).await;
        assert!(
            !matches!(signed[0].status, NodeStatus::Failed(_)),
            "{}: {:?}",
            node.name(),
            signed[0].status
        );
        let target = node.run_ok(&format!("readlink -f {profile}")).unwrap();
        assert_eq!(target.trim(), fx.root, "{}", node.name());
    }
}
