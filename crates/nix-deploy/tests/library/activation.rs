//! Activation on throwaway nodes (no systemd: the watchdog is the detached
//! `sleep` kind): the profile link never dangles during switches;
//! generations and rollback agree with `nix-env --list-generations`; a
//! failing stage rolls back; a deployer killed before confirming leaves a
//! node back on its previous generation, and its watchdog never undoes a
//! later deploy or a switch by hand; two deploys to one node take turns.

use std::io::Read;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_ssh::{Agent, ConfigFile, SshOptions, SshSession, Target};
use nix_deploy::activate::{generations, ActivationError};
use nix_deploy::deploy::{
    deploy_nodes, DeployEvent, DeployOptions, Goal, NodeError, NodeOutcome, NodePlan, NodeStatus,
};
use nix_deploy::stage::{Stage, StageContext, StageFuture};
use nix_wire::StorePath;
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::fixture_closure;
use tokio_util::sync::CancellationToken;

const PROFILE: &str = "/nix/var/nix/profiles/nix-deploy";

/// A test stage: fails, panics, or sleeps then succeeds.
#[derive(Debug)]
enum TestStage {
    Fail,
    Panic,
    Sleep(Duration),
}

impl Stage for TestStage {
    fn name(&self) -> &str {
        match self {
            TestStage::Fail => "failing",
            TestStage::Panic => "panicking",
            TestStage::Sleep(_) => "sleeping",
        }
    }

    fn run<'a>(&'a self, _cx: StageContext<'a>) -> StageFuture<'a> {
        Box::pin(async move {
            match self {
                TestStage::Fail => Err("forced to fail".into()),
                TestStage::Panic => panic!("a bug in a stage"),
                TestStage::Sleep(d) => {
                    tokio::time::sleep(*d).await;
                    Ok(())
                }
            }
        })
    }
}

fn options(ssh_config: &std::path::Path) -> DeployOptions {
    DeployOptions {
        goal: Goal::All,
        ssh: SshOptions {
            config_file: ConfigFile::Path(ssh_config.to_owned()),
            agent: Agent::Disabled,
            connect_timeout: Duration::from_secs(3),
            ..SshOptions::default()
        },
        ..DeployOptions::default()
    }
}

fn plan(node: &str, root: &str) -> NodePlan {
    NodePlan {
        name: node.to_owned(),
        target: Target::parse(node).unwrap(),
        profile_path: PROFILE.to_owned(),
        profile: StorePath::parse(root).unwrap(),
        peer_address: None,
        peer_port: None,
    }
}

async fn deploy(node: &str, root: &str, opts: &DeployOptions) -> NodeOutcome {
    let mut out = deploy_nodes(
        vec![plan(node, root)],
        opts,
        None,
        &CancellationToken::new(),
    )
    .await;
    out.pop().unwrap()
}

fn roots(seed: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| fixture_closure(3, &format!("{seed}-{i}"), 1).root)
        .collect()
}

/// `(number, current)` per line of `nix-env --list-generations`.
fn nix_env_generations(node: &Node) -> Vec<(u64, bool)> {
    node.run_ok(&format!("nix-env --list-generations -p {PROFILE}"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let n = l.split_whitespace().next().unwrap().parse().unwrap();
            (n, l.contains("(current)"))
        })
        .collect()
}

fn profile_target(node: &Node) -> String {
    node.run_ok(&format!("readlink -f {PROFILE}"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_never_dangle_and_generations_match_nix_env() {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = cluster.node("n").unwrap();
    let roots = roots("activation-gen", 4);
    let opts = options(cluster.ssh_config());
    let first = deploy("n", &roots[0], &opts).await;
    assert!(first.status.is_success(), "{first:?}");
    let mut watcher = node
        .command("/bin/sh")
        .args([
            "-c",
            &format!(
                "i=0; while [ ! -e /tmp/stop-watch ]; do readlink -e {PROFILE} >/dev/null || echo DANGLING; i=$((i+1)); done; echo checks $i"
            ),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    for root in &roots[1..] {
        let o = deploy("n", root, &opts).await;
        assert!(o.status.is_success(), "{o:?}");
        assert_eq!(profile_target(node), *root);
    }
    node.run_ok("touch /tmp/stop-watch").unwrap();
    let mut seen = String::new();
    watcher
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    watcher.wait().unwrap();
    assert!(!seen.contains("DANGLING"), "{seen}");
    let checks: u64 = seen
        .trim()
        .strip_prefix("checks ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(checks > 100, "the loop ran only {checks} times");

    let session = SshSession::connect(&Target::parse("n").unwrap(), &opts.ssh)
        .await
        .unwrap();
    let ours = generations::list(&session, PROFILE).await.unwrap();
    let theirs = nix_env_generations(node);
    let ours_pairs: Vec<(u64, bool)> = ours.iter().map(|g| (g.number, g.current)).collect();
    assert_eq!(ours_pairs, theirs);
    assert_eq!(
        ours_pairs,
        vec![(1, false), (2, false), (3, false), (4, true)]
    );
    let paths: Vec<&str> = ours.iter().map(|g| g.path.as_str()).collect();
    assert_eq!(paths, roots.iter().map(String::as_str).collect::<Vec<_>>());

    let back = generations::rollback(&session, PROFILE, None)
        .await
        .unwrap();
    assert_eq!(back.number, 3);
    assert_eq!(profile_target(node), roots[2]);
    assert!(nix_env_generations(node).contains(&(3, true)));
    let to_one = generations::rollback(&session, PROFILE, Some(1))
        .await
        .unwrap();
    assert_eq!(to_one.path, roots[0]);
    assert_eq!(profile_target(node), roots[0]);
    assert!(nix_env_generations(node).contains(&(1, true)));
    let missing = generations::rollback(&session, PROFILE, Some(99))
        .await
        .unwrap_err();
    assert!(
        matches!(
            missing,
            ActivationError::NoSuchGeneration { wanted: 99, .. }
        ),
        "{missing:?}"
    );
    let message = missing.to_string();
    assert!(
        message.contains("no generation 99; it has 1, 2, 3, 4"),
        "{message}"
    );
    let none_before = generations::rollback(&session, PROFILE, None)
        .await
        .unwrap_err();
    assert!(
        matches!(none_before, ActivationError::NoPreviousGeneration { .. }),
        "{none_before}"
    );

    let path = node.run_ok("sh -lc 'echo $PATH'").unwrap();
    assert!(path.contains(&format!("{PROFILE}/bin")), "{path}");
    let file = node.run_ok("cat /etc/profile.d/nix-deploy.sh").unwrap();
    let again = deploy("n", &roots[3], &opts).await;
    assert!(again.status.is_success(), "{again:?}");
    assert_eq!(
        node.run_ok("cat /etc/profile.d/nix-deploy.sh").unwrap(),
        file
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stage_rolls_the_node_back() {
    failing_stage_rolls_back(NodeKind::Trixie, "activation-fail").await;
}

/// The same on Debian 12's Nix 2.8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stage_rolls_the_node_back_on_nix_2_8() {
    failing_stage_rolls_back(NodeKind::LocalNix, "activation-fail-2.8").await;
}

async fn failing_stage_rolls_back(kind: NodeKind, seed: &str) {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", kind)).unwrap();
    let node = cluster.node("n").unwrap();
    let roots = roots(seed, 3);
    let mut opts = options(cluster.ssh_config());
    assert!(deploy("n", &roots[0], &opts).await.status.is_success());
    opts.stages = vec![Arc::new(TestStage::Fail)];
    let o = deploy("n", &roots[1], &opts).await;
    let NodeStatus::RolledBack { reason, generation } = &o.status else {
        panic!("expected a rollback: {o:?}")
    };
    assert_eq!(*generation, 1);
    assert!(
        matches!(reason, NodeError::Stage { stage, .. } if stage == "failing"),
        "{reason}"
    );
    assert_eq!(profile_target(node), roots[0]);
    assert_eq!(nix_env_generations(node), vec![(1, true), (2, false)]);

    opts.rollback = None;
    let o = deploy("n", &roots[2], &opts).await;
    assert!(
        matches!(o.status, NodeStatus::Failed(NodeError::Stage { .. })),
        "{o:?}"
    );
    assert_eq!(profile_target(node), roots[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_stage_fails_its_node_and_the_watchdog_rolls_it_back() {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = cluster.node("n").unwrap();
    let roots = roots("activation-panic", 2);
    let mut opts = options(cluster.ssh_config());
    assert!(deploy("n", &roots[0], &opts).await.status.is_success());
    opts.stages = vec![Arc::new(TestStage::Panic)];
    opts.rollback = Some(Duration::from_secs(2));
    let o = deploy("n", &roots[1], &opts).await;
    assert!(
        matches!(&o.status, NodeStatus::Failed(NodeError::Panicked { node, message })
            if node == "n" && message == "a bug in a stage"),
        "{o:?}"
    );
    wait_for_watchdogs(node);
    assert_eq!(profile_target(node), roots[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_past_its_deadline_fails_and_its_watchdog_rolls_it_back() {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = cluster.node("n").unwrap();
    let roots = roots("activation-deadline", 2);
    let mut opts = options(cluster.ssh_config());
    assert!(deploy("n", &roots[0], &opts).await.status.is_success());
    // A stage that would hang: the node's deadline stops the deploy.
    opts.stages = vec![Arc::new(TestStage::Sleep(Duration::from_secs(3600)))];
    opts.rollback = Some(Duration::from_secs(2));
    opts.node_timeout = Duration::from_secs(6);
    let started = Instant::now();
    let o = deploy("n", &roots[1], &opts).await;
    assert!(
        matches!(&o.status, NodeStatus::Failed(NodeError::TimedOut { node, seconds: 6 }) if node == "n"),
        "{o:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    wait_for_watchdogs(node);
    assert_eq!(profile_target(node), roots[0]);
    assert_eq!(nix_env_generations(node), vec![(1, true), (2, false)]);
}

/// The transient timers of watchdogs the node's systemd still has.
fn rollback_timers(node: &Node) -> Vec<String> {
    node.run_ok("systemctl list-units --all --plain --no-legend 'nix-deploy-rollback-*'")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_real_systemd_a_killed_deployers_timer_rolls_back_and_a_later_deploy_supersedes_it() {
    let cluster = Cluster::start(&ClusterSpec::new().systemd_node("n", NodeKind::Trixie)).unwrap();
    let node = cluster.node("n").unwrap();
    let roots = roots("activation-systemd-real", 3);
    let mut opts = options(cluster.ssh_config());
    opts.lock_timeout = Duration::from_secs(5);
    opts.rollback = Some(Duration::from_secs(8));
    assert!(deploy("n", &roots[0], &opts).await.status.is_success());
    assert_eq!(
        rollback_timers(node),
        Vec::<String>::new(),
        "confirmed: stopped"
    );

    // A deployer dies after its switch: systemd's timer rolls it back.
    kill_after_switch(&cluster, node, &roots[1]);
    let timers = rollback_timers(node);
    assert!(!timers.is_empty(), "a transient timer is armed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while profile_target(node) != roots[0] {
        assert!(Instant::now() < deadline, "the timer did not roll back");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(nix_env_generations(node), vec![(1, true), (2, false)]);

    // Another dies after its switch; a later deploy supersedes its timer
    // (stopped at once) and is never undone.
    kill_after_switch(&cluster, node, &roots[2]);
    let b = deploy("n", &roots[1], &opts).await;
    assert!(b.status.is_success(), "{b:?}");
    assert_eq!(
        rollback_timers(node),
        Vec::<String>::new(),
        "superseded: stopped"
    );
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(profile_target(node), roots[1]);
    let states = node
        .run_ok("cat /nix/var/nix-deploy/watchdogs/*/state | sort")
        .unwrap();
    assert!(states.contains("superseded"), "{states}");
}

/// Not a test on its own: the deployer that `kill_after_switch` runs in a
/// child process and kills. Does nothing unless the variable is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper: run by kill_after_switch"]
async fn deployer_child() {
    let Ok(args) = std::env::var("NIX_DEPLOY_TEST_CHILD") else {
        return;
    };
    let mut parts = args.split('\n');
    let (config, root) = (parts.next().unwrap(), parts.next().unwrap());
    let mut opts = options(std::path::Path::new(config));
    opts.rollback = Some(Duration::from_secs(6));
    opts.stages = vec![Arc::new(TestStage::Sleep(Duration::from_secs(3600)))];
    let o = deploy("n", root, &opts).await;
    panic!("the hanging stage ended: {o:?}");
}

/// Runs `deployer_child` deploying `root` (its watchdog: 6 s, its stage
/// hangs) and kills it (SIGKILL) once the node is switched to `root`.
fn kill_after_switch(cluster: &Cluster, node: &Node, root: &str) {
    // The harness names a test by its module path without the crate.
    let test = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::deployer_child"),
        None => "deployer_child".to_owned(),
    };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &test, "--nocapture", "--ignored"])
        .env(
            "NIX_DEPLOY_TEST_CHILD",
            format!("{}\n{}", cluster.ssh_config().display(), root),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Switched, and its watchdog knows the generation it guards.
    while profile_target(node) != root
        || !node
            .run("ls /nix/var/nix-deploy/watchdogs/*/expect")
            .unwrap()
            .status
            .success()
    {
        assert!(Instant::now() < deadline, "the child never switched");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Waits until no detached watchdog runs on `node` any more.
fn wait_for_watchdogs(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while node
        .run("pgrep -f '[w]atchdogs/'")
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "a watchdog never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_deployer_leaves_the_node_on_its_previous_generation() {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = cluster.node("n").unwrap();
    let roots = roots("activation-kill", 3);
    let opts = options(cluster.ssh_config());
    assert!(deploy("n", &roots[0], &opts).await.status.is_success());
    kill_after_switch(&cluster, node, &roots[1]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while profile_target(node) != roots[0] {
        assert!(Instant::now() < deadline, "the node did not roll back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(nix_env_generations(node), vec![(1, true), (2, false)]);
    // The dead deployer's lock went with its connection.
    let mut opts = opts;
    opts.lock_timeout = Duration::from_secs(5);
    let o = deploy("n", &roots[2], &opts).await;
    assert!(o.status.is_success(), "{o:?}");
    assert_eq!(profile_target(node), roots[2]);
}

/// A node whose generation 1 a deploy confirmed, then deploy A switched
/// to generation 2 and died before confirming (its watchdog pending);
/// returns the cluster, three roots, and options for the next deploy, B.
async fn after_a_dead_deployer(seed: &str) -> (Cluster, Vec<String>, DeployOptions) {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let roots = roots(seed, 3);
    let mut opts = options(cluster.ssh_config());
    opts.lock_timeout = Duration::from_secs(5);
    // B's own watchdog sleeps out its timeout before it ends.
    opts.rollback = Some(Duration::from_secs(8));
    assert!(deploy("n", &roots[0], &opts).await.status.is_success());
    kill_after_switch(&cluster, cluster.node("n").unwrap(), &roots[1]);
    (cluster, roots, opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_deployers_watchdog_never_undoes_a_later_confirmed_deploy() {
    let (cluster, roots, opts) = after_a_dead_deployer("activation-orphan").await;
    let node = cluster.node("n").unwrap();
    // B deploys and confirms generation 3 before A's watchdog expires.
    let b = deploy("n", &roots[2], &opts).await;
    assert!(b.status.is_success(), "{b:?}");
    wait_for_watchdogs(node);
    assert_eq!(profile_target(node), roots[2]);
    assert_eq!(
        nix_env_generations(node),
        vec![(1, false), (2, false), (3, true)]
    );
    let states = node
        .run_ok("cat /nix/var/nix-deploy/watchdogs/*/state")
        .unwrap();
    assert_eq!(states.trim(), "superseded", "A's watchdog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_deploy_that_fails_goes_back_to_the_last_confirmed_generation() {
    let (cluster, roots, mut opts) = after_a_dead_deployer("activation-inherit").await;
    let node = cluster.node("n").unwrap();
    // B fails a stage: B goes back to generation 1, which a deploy
    // confirmed, not to A's.
    opts.stages = vec![Arc::new(TestStage::Fail)];
    let b = deploy("n", &roots[2], &opts).await;
    let NodeStatus::RolledBack { generation, .. } = &b.status else {
        panic!("expected a rollback: {b:?}")
    };
    assert_eq!(*generation, 1);
    wait_for_watchdogs(node);
    assert_eq!(profile_target(node), roots[0]);
    assert_eq!(
        nix_env_generations(node),
        vec![(1, true), (2, false), (3, false)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_leaves_a_profile_switched_by_hand_alone() {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = cluster.node("n").unwrap();
    let roots = roots("activation-by-hand", 2);
    let opts = options(cluster.ssh_config());
    assert!(deploy("n", &roots[0], &opts).await.status.is_success());
    kill_after_switch(&cluster, node, &roots[1]);
    // Someone switches by hand, without our lock, before A's watchdog
    // expires (to generation 3, holding the first closure again): it finds
    // the profile on another generation and leaves it.
    node.run_ok(&format!("nix-env -p {PROFILE} --set {}", roots[0]))
        .unwrap();
    wait_for_watchdogs(node);
    assert_eq!(
        nix_env_generations(node),
        vec![(1, false), (2, false), (3, true)]
    );
    let states = node
        .run_ok("cat /nix/var/nix-deploy/watchdogs/*/state")
        .unwrap();
    assert_eq!(states.trim(), "superseded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deploys_to_one_node_take_turns() {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = cluster.node("n").unwrap();
    let roots = roots("activation-lock", 4);
    let mut opts = options(cluster.ssh_config());
    assert!(deploy("n", &roots[0], &opts).await.status.is_success());
    opts.stages = vec![Arc::new(TestStage::Sleep(Duration::from_secs(5)))];
    let cancel = CancellationToken::new();
    let (tx_a, mut rx_a) = tokio::sync::mpsc::unbounded_channel();
    let (tx_b, mut rx_b) = tokio::sync::mpsc::unbounded_channel();
    let (a, b) = tokio::join!(
        deploy_nodes(vec![plan("n", &roots[1])], &opts, Some(tx_a), &cancel),
        deploy_nodes(vec![plan("n", &roots[2])], &opts, Some(tx_b), &cancel),
    );
    assert!(a[0].status.is_success(), "{a:?}");
    assert!(b[0].status.is_success(), "{b:?}");
    let mut waited = Vec::new();
    for rx in [&mut rx_a, &mut rx_b] {
        while let Ok(e) = rx.try_recv() {
            if let DeployEvent::WaitingForLock { holder, .. } = e {
                waited.push(holder);
            }
        }
    }
    assert_eq!(waited.len(), 1, "exactly one deploy waits: {waited:?}");
    assert!(waited[0].starts_with("deploy pid "), "{waited:?}");
    let gens = nix_env_generations(node);
    assert_eq!(gens.len(), 3, "{gens:?}");
    let target = profile_target(node);
    assert!(target == roots[1] || target == roots[2], "{target}");
    node.run_ok("nix-store --verify --check-contents").unwrap();

    // With a short lock timeout the second fails clearly: it starts once
    // the first, holding the lock, has switched (its stage then sleeps 5 s).
    let mut short = opts.clone();
    short.lock_timeout = Duration::from_secs(1);
    short.stages = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (mut a, b) = tokio::join!(
        deploy_nodes(vec![plan("n", &roots[3])], &opts, Some(tx), &cancel),
        async {
            while let Some(e) = rx.recv().await {
                if matches!(e, DeployEvent::Switched { .. }) {
                    break;
                }
            }
            deploy("n", &roots[0], &short).await
        }
    );
    let a = a.pop().unwrap();
    assert!(a.status.is_success(), "{a:?}");
    let NodeStatus::Failed(NodeError::Activation(e @ ActivationError::LockTimeout { .. })) =
        &b.status
    else {
        panic!("expected a lock timeout: {b:?}")
    };
    assert!(
        e.to_string()
            .contains("another deploy holds the node's lock (deploy pid "),
        "{e}"
    );
    assert_eq!(profile_target(node), roots[3]);
    node.run_ok("nix-store --verify --check-contents").unwrap();
}

/// A stand-in `systemd-run` (the test nodes have no systemd): records its
/// arguments, then runs the command after `--on-active`, detached, as the
/// transient timer would. `systemctl` only records its arguments.
const FAKE_SYSTEMD: &str = r#"mkdir -p /run/systemd/system /usr/local/bin
cat > /usr/local/bin/systemd-run <<'EOS'
#!/bin/sh
echo "$*" >> /tmp/systemd-run.args
secs=0
while [ $# -gt 0 ]; do
  case "$1" in
    --on-active=*) secs=${1#--on-active=}; secs=${secs%s} ;;
    --unit=*|--quiet|--timer-property=*) ;;
    *) break ;;
  esac
  shift
done
setsid sh -c 'sleep "$0"; exec "$@"' "$secs" "$@" </dev/null >/dev/null 2>&1 &
EOS
printf '#!/bin/sh\necho "$*" >> /tmp/systemctl.args\n' > /usr/local/bin/systemctl
chmod +x /usr/local/bin/systemd-run /usr/local/bin/systemctl"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_systemd_a_transient_timer_and_a_late_confirmation_is_a_rollback() {
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = cluster.node("n").unwrap();
    node.run_ok(FAKE_SYSTEMD).unwrap();
    let roots = roots("activation-systemd", 3);
    let mut opts = options(cluster.ssh_config());
    assert!(deploy("n", &roots[0], &opts).await.status.is_success());

    // Confirmed in time: the timer is armed, then stopped.
    let o = deploy("n", &roots[1], &opts).await;
    assert!(o.status.is_success(), "{o:?}");
    let armed = node.run_ok("cat /tmp/systemd-run.args").unwrap();
    let unit = armed
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--unit="))
        .unwrap()
        .to_owned();
    assert!(unit.starts_with("nix-deploy-rollback-"), "{armed}");
    assert!(armed.contains("--on-active=60s"), "{armed}");
    let stopped = node.run_ok("cat /tmp/systemctl.args").unwrap();
    assert_eq!(stopped.trim(), format!("stop {unit}.timer"));

    // A stage outlasting the timeout: the timer rolls back, the late
    // confirmation says so, the outcome is a rollback.
    opts.rollback = Some(Duration::from_secs(2));
    opts.stages = vec![Arc::new(TestStage::Sleep(Duration::from_secs(5)))];
    let o = deploy("n", &roots[2], &opts).await;
    let NodeStatus::RolledBack { reason, generation } = &o.status else {
        panic!("expected a rollback: {o:?}")
    };
    assert_eq!(*generation, 2);
    assert!(
        matches!(
            reason,
            NodeError::Activation(ActivationError::TooLate { generation: 2, .. })
        ),
        "{reason}"
    );
    assert!(reason.to_string().contains("too late"), "{reason}");
    assert_eq!(profile_target(node), roots[1]);
    assert_eq!(
        nix_env_generations(node),
        vec![(1, false), (2, true), (3, false)]
    );
}
