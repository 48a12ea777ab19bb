//! Fan-out on real nodes (Nix 2.26 and 2.8): the deployer sends the union
//! of the closures once, to the seed, and the other nodes are fed node to
//! node by the relay; a node its peers can't reach gets a direct copy, and
//! one they reach only at its peer address is fed there; a
//! relay's key works only from its source, only for the daemon, and not
//! after its expiry; after an aborted deploy the relay ends and its key
//! expires, and the next deploy clears it.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_ssh::{Ed25519Keypair, PrivateKey, SshOptions, SshSession, Target};
use nix_deploy::deploy::{deploy_nodes, DeployEvent, DeployOptions, Goal, NodePlan, NodeStatus};
use nix_deploy::fanout::{Authorization, FanOutOptions, Relay, Source};
use nix_wire::daemon::{ClientConfig, DaemonClient};
use nix_wire::StorePath;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::{fixture_closure, fixture_closure_random, fixture_profile, relay_package, run};
use tokio_util::sync::CancellationToken;

const PROFILE: &str = "/nix/var/nix/profiles/nix-deploy";

/// Three nodes (two Nix 2.26, one Nix 2.8), each with a profile made of a
/// shared random closure and a small closure of its own.
fn cluster_and_plans(tag: &str) -> (Cluster, Vec<NodePlan>, BTreeSet<String>) {
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("a", NodeKind::Trixie)
            .node("b", NodeKind::LocalNix)
            .node("c", NodeKind::Trixie),
    )
    .unwrap();
    // Large enough that the relay package (about 9 MiB) and the seed's
    // link probe (up to 8 MiB) don't blur the uplink count.
    let shared = fixture_closure_random(24, &format!("fanout-shared-{tag}"), 1024);
    let mut union = shared.closure.clone();
    let plans = cluster
        .nodes()
        .iter()
        .map(|node| {
            let own = fixture_closure(4, &format!("fanout-{tag}-{}", node.name()), 16);
            let profile = fixture_profile(
                &format!("fanout-{tag}-profile-{}", node.name()),
                &[&shared.root, &own.root],
            );
            union.extend(profile.closure.iter().cloned());
            NodePlan {
                name: node.name().to_owned(),
                target: Target::parse(node.name()).unwrap(),
                profile_path: PROFILE.to_owned(),
                profile: StorePath::parse(&profile.root).unwrap(),
                peer_address: None,
                peer_port: None,
            }
        })
        .collect();
    (cluster, plans, union)
}

fn options(cluster: &Cluster, key_lifetime: Duration) -> DeployOptions {
    DeployOptions {
        goal: Goal::Switch,
        ssh: SshOptions {
            connect_timeout: Duration::from_secs(3),
            ..cluster.ssh_options()
        },
        fan_out: Some(FanOutOptions {
            relay: Relay::new(StorePath::parse(&relay_package()).unwrap()),
            degree: 4,
            key_lifetime,
        }),
        ..DeployOptions::default()
    }
}

/// The NAR bytes of `paths` in the local store.
fn nar_bytes<'a>(paths: impl IntoIterator<Item = &'a String>) -> u64 {
    let mut cmd = Command::new("nix-store");
    cmd.args(["-q", "--size"]).args(paths);
    run(&mut cmd)
        .lines()
        .map(|l| l.trim().parse::<u64>().unwrap())
        .sum()
}

async fn deploy(
    plans: Vec<NodePlan>,
    opts: &DeployOptions,
) -> (Vec<nix_deploy::deploy::NodeOutcome>, Vec<(String, Source)>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let outcomes = deploy_nodes(plans, opts, Some(tx), &CancellationToken::new()).await;
    let mut sources = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let DeployEvent::Source { name, source } = e {
            sources.push((name, source));
        }
    }
    (outcomes, sources)
}

/// The relay lines in the node's root authorized_keys.
fn relay_lines(node: &Node) -> Vec<String> {
    node.run_ok("cat /root/.ssh/authorized_keys")
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(" nix-deploy-relay"))
        .map(str::to_owned)
        .collect()
}

fn relays_running(node: &Node) -> usize {
    // (The bracket keeps pgrep's own shell from matching.)
    node.run("pgrep -c -f 'bin/nix-deploy-rela[y]'")
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Waits (at most 20 s) until no relay runs on any node.
async fn relays_end(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.nodes().iter().any(|n| relays_running(n) > 0) {
        assert!(Instant::now() < deadline, "a relay outlived its deploy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn check_deployed(cluster: &Cluster, plans: &[NodePlan]) {
    for plan in plans {
        let node = cluster.node(&plan.name).unwrap();
        node.verify_store().unwrap();
        let root = plan.profile.to_absolute();
        let want = run(Command::new("nix-store").args(["-qR", &root]));
        let want: BTreeSet<String> = want.lines().map(str::to_owned).collect();
        assert_eq!(node.store_closure(&root).unwrap(), want, "{}", plan.name);
        let current = node.run_ok(&format!("readlink -f {PROFILE}")).unwrap();
        assert_eq!(current.trim(), root, "{}", plan.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_get_each_path_over_the_uplink_once_and_the_relay_keys_go() {
    // It counts the bytes through the uplink: nothing else in this binary
    // runs meanwhile (once, beside the others, it counted 28.6 MB against
    // a bound of 25.7: the cause was not seen).
    let _measuring = test_support::timing::alone().await;
    let (cluster, plans, union) = cluster_and_plans("once");
    let opts = options(&cluster, Duration::from_secs(600));
    let relay: BTreeSet<String> = run(Command::new("nix-store").args(["-qR", &relay_package()]))
        .lines()
        .map(str::to_owned)
        .collect();
    // Behind 100 Mbit/s the seed's link probe is a short train (on a
    // faster link it sends up to 8 MiB, which would blur the count).
    cluster.shape_uplink(Some(100)).unwrap();
    let before = cluster.uplink_sent_bytes().unwrap();
    let (outcomes, sources) = deploy(plans.clone(), &opts).await;
    let uplink = cluster.uplink_sent_bytes().unwrap() - before;
    cluster.shape_uplink(None).unwrap();
    for o in &outcomes {
        assert!(matches!(o.status, NodeStatus::Done), "{o:?}");
    }
    check_deployed(&cluster, &plans);

    // One seed, fed from here; the two others from it.
    let seeds: Vec<&String> = sources
        .iter()
        .filter(|(_, s)| *s == Source::Seed)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(seeds.len(), 1, "{sources:?}");
    let seed = seeds[0].clone();
    for plan in plans.iter().filter(|p| p.name != seed) {
        assert!(
            sources.contains(&(plan.name.clone(), Source::Node(seed.clone()))),
            "{sources:?}"
        );
    }
    // The uplink carried the union (and the relay) about once, well
    // below the three closures a direct copy to each would take.
    let once = nar_bytes(union.union(&relay));
    let direct = 3 * nar_bytes(&union);
    assert!(
        uplink < once + once / 5 + (2 << 20) && uplink < direct * 2 / 3,
        "uplink {uplink} bytes; the union and relay are {once}, three direct copies {direct}"
    );
    // The relays ended, their keys are gone.
    relays_end(&cluster).await;
    for node in cluster.nodes() {
        assert_eq!(relay_lines(node), Vec::<String>::new(), "{}", node.name());
    }

    // Again: nothing lacks anywhere, nothing fans out.
    let (outcomes, sources) = deploy(plans.clone(), &opts).await;
    assert!(outcomes.iter().all(|o| o.sent_paths == 0), "{outcomes:?}");
    assert_eq!(sources, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_its_peers_cant_reach_gets_a_direct_copy() {
    let _measuring = test_support::timing::shared().await;
    let (cluster, plans, _) = cluster_and_plans("isolated");
    // c reaches the deployer (this machine), but neither a nor b.
    let c = cluster.node("c").unwrap();
    for peer in ["a", "b"] {
        let ip = cluster.node(peer).unwrap().ip();
        c.run_ok(&format!("ip route add prohibit {ip}/32")).unwrap();
    }
    let opts = options(&cluster, Duration::from_secs(600));
    let (outcomes, sources) = deploy(plans.clone(), &opts).await;
    for o in &outcomes {
        assert!(matches!(o.status, NodeStatus::Done), "{o:?}");
    }
    check_deployed(&cluster, &plans);
    let direct: Vec<&String> = sources
        .iter()
        .filter_map(|(n, s)| match s {
            Source::Direct { reason } => {
                assert!(reason.contains("can't feed c"), "{reason}");
                Some(n)
            }
            _ => None,
        })
        .collect();
    assert_eq!(direct, ["c"], "{sources:?}");
    for node in cluster.nodes() {
        assert_eq!(relay_lines(node), Vec::<String>::new(), "{}", node.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_its_peers_reach_only_at_its_peer_address_is_fed_there() {
    let _measuring = test_support::timing::shared().await;
    let (cluster, mut plans, _) = cluster_and_plans("peer-address");
    // c has a second address, the one it also sends to its peers from
    // (its "private network"); a and b can't reach its first one.
    let c = cluster.node("c").unwrap();
    let ip = c.ip().to_string();
    let prefix = ip.rsplit_once('.').unwrap().0;
    let private = format!("{prefix}.200");
    c.run_ok(&format!(
        "dev=$(ip -o -4 addr show | awk '$4 ~ /^{ip}\\// {{print $2}}'); \
         ip addr add {private}/24 dev $dev && \
         ip route replace {prefix}.0/24 dev $dev proto kernel scope link src {private}"
    ))
    .unwrap();
    for peer in ["a", "b"] {
        let node = cluster.node(peer).unwrap();
        node.run_ok(&format!("ip route add prohibit {ip}/32"))
            .unwrap();
    }
    // And it takes its peers' connections on a port of its own there
    // (`peerPort`; the deployer still uses port 22, as through a port
    // forward): a second sshd, whose log shows the relay came to it.
    c.run_ok(&format!(
        "/usr/sbin/sshd -o UsePAM=no -h /etc/ssh/ssh_host_ed25519_key \
         -o ListenAddress={private}:2022 -E /run/sshd-peer.log"
    ))
    .unwrap();
    for plan in &mut plans {
        if plan.name == "c" {
            plan.peer_address = Some(private.clone());
            plan.peer_port = Some(2022);
        }
    }
    let opts = options(&cluster, Duration::from_secs(600));
    let (outcomes, sources) = deploy(plans.clone(), &opts).await;
    for o in &outcomes {
        assert!(matches!(o.status, NodeStatus::Done), "{o:?}");
    }
    check_deployed(&cluster, &plans);
    assert!(
        sources
            .iter()
            .all(|(_, s)| !matches!(s, Source::Direct { .. })),
        "every node fed through the fan-out: {sources:?}"
    );
    assert_eq!(sources.len(), 3, "{sources:?}");
    let fed_c = sources
        .iter()
        .any(|(n, s)| n == "c" && matches!(s, Source::Node(_)));
    assert!(fed_c, "c fed by a peer: {sources:?}");
    let log = c.run_ok("cat /run/sshd-peer.log").unwrap();
    assert!(log.contains("Accepted publickey"), "{log}");
}

/// A session to `node` from this machine with `key`, accepting the host
/// key `pinned` only.
async fn connect_with(
    node: &Node,
    key: Arc<PrivateKey>,
    pinned: deploy_ssh::PublicKey,
) -> Result<SshSession, deploy_ssh::SshError> {
    let mut target = Target::new(node.ip().to_string());
    target.port = Some(node.ssh_port());
    target.user = Some("root".to_owned());
    let options = SshOptions {
        config_file: deploy_ssh::ConfigFile::None,
        agent: deploy_ssh::Agent::Disabled,
        known_hosts_files: vec!["/dev/null".into()],
        identity_files: vec!["/nonexistent".into()],
        identity_keys: vec![key],
        pinned_host_keys: vec![pinned],
        connect_timeout: Duration::from_secs(5),
        ..SshOptions::default()
    };
    SshSession::connect(&target, &options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_key_serves_only_its_source_only_the_daemon_and_not_after_expiry() {
    let _measuring = test_support::timing::shared().await;
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = cluster.node("n").unwrap();
    let admin = SshSession::connect(&Target::parse("n").unwrap(), &cluster.ssh_options())
        .await
        .unwrap();
    let host_key = admin.host_key().unwrap().clone();
    let key = Arc::new(PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32])));
    let public = key.public_key().to_openssh().unwrap();
    // This machine's address on the cluster network: where we connect from.
    let host_ip = node.host_ip().to_string();
    let grant = |public: &str, source: &str, secs: u64| {
        let (public, source) = (public.to_owned(), source.to_owned());
        let admin = &admin;
        async move {
            Authorization::grant(
                admin,
                &public,
                &source,
                "nix-daemon --stdio",
                Duration::from_secs(secs),
            )
            .await
            .unwrap()
        }
    };

    // From elsewhere: refused.
    let refused = grant(&public, "192.0.2.1", 600).await;
    assert!(connect_with(node, key.clone(), host_key.clone())
        .await
        .is_err());
    refused.revoke(&admin).await.unwrap();
    assert_eq!(relay_lines(node), Vec::<String>::new());

    // From here: whatever is asked, the daemon answers.
    let expiring = grant(&public, &host_ip, 4).await;
    let granted = Instant::now();
    let session = connect_with(node, key.clone(), host_key.clone())
        .await
        .unwrap();
    let process = session.exec("cat /etc/shadow").await.unwrap();
    let daemon = DaemonClient::connect(process, ClientConfig::default()).await;
    assert!(daemon.is_ok(), "the forced command is not the daemon");
    drop(daemon);
    drop(session);
    assert_eq!(relay_lines(node).len(), 1);
    // Past its expiry (sshd reads the minute's seconds too): refused,
    // though the line is still there.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(granted.elapsed())).await;
    assert!(connect_with(node, key.clone(), host_key.clone())
        .await
        .is_err());
    assert_eq!(relay_lines(node).len(), 1);
    // The next grant drops the expired line; revoking leaves the user's
    // own lines.
    let other = Arc::new(PrivateKey::from(Ed25519Keypair::from_seed(&[9; 32])));
    let other_public = other.public_key().to_openssh().unwrap();
    let before_user_lines = node
        .run_ok("grep -vc nix-deploy-relay /root/.ssh/authorized_keys")
        .unwrap();
    let second = grant(&other_public, &host_ip, 600).await;
    let lines = relay_lines(node);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(other_public.split(' ').nth(1).unwrap()));
    drop(expiring);
    second.revoke(&admin).await.unwrap();
    assert_eq!(relay_lines(node), Vec::<String>::new());
    assert_eq!(
        node.run_ok("grep -vc nix-deploy-relay /root/.ssh/authorized_keys")
            .unwrap(),
        before_user_lines
    );
    assert_eq!(
        node.run_ok("stat -c %a /root/.ssh/authorized_keys")
            .unwrap()
            .trim(),
        "600"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_aborted_deploy_the_relay_ends_its_key_expires_and_the_next_deploy_clears_it() {
    let _measuring = test_support::timing::shared().await;
    let (cluster, plans, _) = cluster_and_plans("aborted");
    // A slow uplink, so the deploy is still feeding when it is aborted.
    cluster.shape_uplink(Some(20)).unwrap();
    let opts = options(&cluster, Duration::from_secs(5));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = {
        let (plans, opts) = (plans.clone(), opts.clone());
        tokio::spawn(async move {
            deploy_nodes(plans, &opts, Some(tx), &CancellationToken::new()).await
        })
    };
    // Abort as soon as a node is fed by another (its key is authorized).
    let fed = loop {
        match rx.recv().await {
            Some(DeployEvent::Source {
                name,
                source: Source::Node(_),
            }) => break name,
            Some(_) => {}
            None => panic!("the deploy ended before any node was fed by another"),
        }
    };
    task.abort();
    let _ = task.await;
    let aborted = Instant::now();
    let fed = cluster.node(&fed).unwrap();
    assert_eq!(relay_lines(fed).len(), 1, "the key was not authorized");
    // The relays notice their deployer is gone and end.
    relays_end(&cluster).await;
    // Past its expiry the key is refused (see the test above); the next
    // deploy (new profiles, so every node lacks something again) works,
    // and leaves no key that sshd would still accept.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(aborted.elapsed())).await;
    cluster.shape_uplink(None).unwrap();
    let again: Vec<NodePlan> = plans
        .iter()
        .map(|p| {
            let own = fixture_closure(2, &format!("fanout-again-{}", p.name), 16);
            let profile = fixture_profile(
                &format!("fanout-again-profile-{}", p.name),
                &[&p.profile.to_absolute(), &own.root],
            );
            NodePlan {
                profile: StorePath::parse(&profile.root).unwrap(),
                peer_address: None,
                peer_port: None,
                ..p.clone()
            }
        })
        .collect();
    let (outcomes, _) = deploy(again.clone(), &opts).await;
    for o in &outcomes {
        assert!(matches!(o.status, NodeStatus::Done), "{o:?}");
    }
    check_deployed(&cluster, &again);
    for node in cluster.nodes() {
        let now = node.run_ok("date +%Y%m%d%H%M%S").unwrap();
        for line in relay_lines(node) {
            let expiry = line
                .split("expiry-time=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap();
            assert!(
                expiry < now.trim(),
                "{}: {line} is still valid",
                node.name()
            );
        }
    }
}
