//! The harness itself, end to end (needs root and scripts/setup-test-machine):
//! real namespaces, overlays and sshd, reached with the OpenSSH client.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::RwLock;
use std::time::Instant;

use test_cluster::{reap_stale, Cluster, ClusterSpec, Node, NodeKind, DATA_ROOT, STATE_ROOT};

/// The stale-cluster test reaps (the others must not reap its leak first) and
/// the bad-spec test counts clusters: they run alone.
static REAPING: RwLock<()> = RwLock::new(());

fn ssh(cluster: &Cluster, node: &Node, user: &str, command: &str) -> Output {
    Command::new("ssh")
        .args(cluster.ssh_args(node, user))
        .arg(command)
        .output()
        .unwrap()
}

fn ssh_ok(cluster: &Cluster, node: &Node, user: &str, command: &str) -> String {
    let out = ssh(cluster, node, user, command);
    assert!(
        out.status.success(),
        "ssh {user}@{} {command}: {}",
        node.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn netns_list() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

/// Asserts nothing of cluster `id` is left on the machine.
fn assert_gone(id: &str, pids: &[u32]) {
    assert!(
        !netns_list().contains(&format!("nd-{id}-")),
        "{}",
        netns_list()
    );
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap()
        .stdout;
    assert!(!String::from_utf8_lossy(&links).contains(&format!("nd{id}")));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&format!("{DATA_ROOT}/{id}")), "{mounts}");
    assert!(!Path::new(DATA_ROOT).join(id).exists());
    assert!(!Path::new(STATE_ROOT).join(id).exists());
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "process left: {stat}"
        );
    }
}

#[test]
fn four_nodes_of_three_kinds() {
    let _shared = REAPING.read().unwrap_or_else(|e| e.into_inner());
    let spec = ClusterSpec::new()
        .node("t1", NodeKind::Trixie)
        .node("t2", NodeKind::Trixie)
        .node("bare", NodeKind::Bare)
        .node("local", NodeKind::LocalNix);
    let started = Instant::now();
    let cluster = Cluster::start(&spec).unwrap();
    eprintln!("4-node cluster started in {:?}", started.elapsed());
    let [t1, t2, bare, local] = cluster.nodes() else {
        panic!("4 nodes expected")
    };

    for node in cluster.nodes() {
        let addr = node.run_ok("ip -4 addr show dev eth0").unwrap();
        assert!(addr.contains(&format!("inet {}/24", node.ip())), "{addr}");
        let netns = Command::new("ip")
            .args(["netns", "exec", node.netns(), "ip", "addr"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&netns.stdout).contains(&node.ip().to_string()));
        assert_eq!(
            ssh_ok(&cluster, node, "root", "id -un; hostname"),
            format!("root\n{}\n", node.name())
        );
        assert_eq!(
            ssh_ok(&cluster, node, "deploy", "id -un; echo $HOME"),
            "deploy\n/home/deploy\n"
        );
        // Its own pid namespace: pid 1 is the node's init, the host's processes are hidden.
        let procs = ssh_ok(
            &cluster,
            node,
            "root",
            "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'",
        );
        let (init, count) = procs.split_once('\n').unwrap();
        assert_eq!(init, "sleep");
        assert!(count.trim().parse::<u32>().unwrap() < 20, "{procs}");
        assert!(node
            .known_hosts_line()
            .starts_with(&format!("{} ssh-ed25519 ", node.ip())));
    }

    // More keys can be authorized, e.g. an ecdsa one.
    let dir = std::env::temp_dir().join(format!("test-cluster-{}", cluster.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ecdsa = dir.join("ecdsa");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-N", "", "-f", ecdsa.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(keygen.success());
    let public = std::fs::read_to_string(ecdsa.with_extension("pub")).unwrap();
    let with_ecdsa = |node: &Node| {
        let known_hosts = format!("UserKnownHostsFile={}", cluster.known_hosts().display());
        Command::new("ssh")
            .args(["-i", ecdsa.to_str().unwrap(), "-o", "IdentitiesOnly=yes"])
            .args(["-o", &known_hosts, "-o", "BatchMode=yes"])
            .arg(format!("deploy@{}", node.ip()))
            .arg("true")
            .output()
            .unwrap()
    };
    assert!(!with_ecdsa(bare).status.success());
    bare.authorize_key("deploy", &public).unwrap();
    assert!(with_ecdsa(bare).status.success());
    std::fs::remove_dir_all(&dir).unwrap();

    // Nodes reach each other: t2 through a jump over the bare node.
    let jump = format!(
        "ssh {} -W %h:%p",
        cluster.ssh_args(bare, "deploy").join(" ")
    );
    let through = Command::new("ssh")
        .args(["-o", &format!("ProxyCommand={jump}")])
        .args(cluster.ssh_args(t2, "root"))
        .arg("hostname")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&through.stdout),
        "t2\n",
        "{through:?}"
    );
    assert_eq!(t1.host_ip(), t2.host_ip());
    let config = cluster.ssh_config().to_str().unwrap();
    let jumped = Command::new("ssh")
        .args(["-F", config, "-J", "local", "deploy@t1", "id -un; hostname"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&jumped.stdout),
        "deploy\nt1\n",
        "{jumped:?}"
    );

    for node in [t1, t2] {
        assert!(ssh_ok(&cluster, node, "root", "nix-store --version").contains("(Nix) 2.26"));
        node.run_ok("nix-store --verify").unwrap();
    }
    assert!(ssh_ok(&cluster, local, "root", "nix-store --version").contains("(Nix) 2.8"));
    local.run_ok("nix-store --verify").unwrap();
    assert!(!ssh(&cluster, bare, "root", "command -v nix-store")
        .status
        .success());
    assert!(!bare.run("test -e /nix").unwrap().status.success());

    // Each node's /nix, /etc and users are its own.
    let marker = format!("/nix/store/marker-{}", cluster.id());
    t1.run_ok(&format!("touch {marker}; useradd extra"))
        .unwrap();
    local.run_ok(&format!("touch {marker}-local")).unwrap();
    assert!(!Path::new(&marker).exists() && !Path::new(&format!("{marker}-local")).exists());
    for node in [t2, local] {
        assert!(!node
            .run(&format!("test -e {marker}"))
            .unwrap()
            .status
            .success());
        assert!(!node.run("id extra").unwrap().status.success());
    }
    assert!(!t2
        .run(&format!("test -e {marker}-local"))
        .unwrap()
        .status
        .success());
    assert!(t1.root().join(marker.trim_start_matches('/')).exists());

    // With a nix-daemon, the unprivileged user can use the store too.
    for node in [t1, local] {
        let add = "echo hi >/tmp/f && nix-store --add /tmp/f";
        assert!(!ssh(&cluster, node, "deploy", add).status.success());
        node.start_nix_daemon().unwrap();
        assert!(ssh_ok(&cluster, node, "deploy", add).starts_with("/nix/store/"));
    }

    // A node's sshd can die and come back.
    t2.stop_sshd();
    assert!(!ssh(&cluster, t2, "root", "true").status.success());
    ssh_ok(&cluster, t1, "root", "true");
    t2.start_sshd().unwrap();
    ssh_ok(&cluster, t2, "root", "true");
    local.stop_sshd();
    local.start_sshd().unwrap();
    let add = "echo again >/tmp/g && nix-store --add /tmp/g";
    assert!(ssh_ok(&cluster, local, "deploy", add).starts_with("/nix/store/"));

    // Shaping applies on both ends of the link.
    local.shape(10).unwrap();
    let host_side = Command::new("tc")
        .args(["qdisc", "show", "dev", local.host_interface()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&host_side.stdout).contains("tbf"));
    assert!(local
        .run_ok("tc qdisc show dev eth0")
        .unwrap()
        .contains("rate 10Mbit"));
    let started = Instant::now();
    let out = ssh(&cluster, local, "root", "head -c 2500000 /dev/zero");
    assert_eq!(out.stdout.len(), 2_500_000);
    let shaped = started.elapsed();
    local.unshape().unwrap();
    assert!(!local
        .run_ok("tc qdisc show dev eth0")
        .unwrap()
        .contains("tbf"));
    // 20 Mbit at 10 Mbit/s: about 2 s.
    assert!(shaped.as_secs_f64() > 1.6, "{shaped:?}");

    let id = cluster.id().to_owned();
    let pids: Vec<u32> = cluster
        .nodes()
        .iter()
        .flat_map(|n| n.pids().unwrap())
        .collect();
    assert!(pids.len() >= 8, "holder and sshd per node: {pids:?}");
    drop(cluster);
    assert_gone(&id, &pids);
}

#[test]
fn clusters_start_in_parallel_and_go_on_panic() {
    let _shared = REAPING.read().unwrap_or_else(|e| e.into_inner());
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let cluster =
                        Cluster::start(&ClusterSpec::uniform(NodeKind::Trixie, 2)).unwrap();
                    let id = cluster.id().to_owned();
                    for node in cluster.nodes() {
                        ssh_ok(&cluster, node, "root", "true");
                    }
                    let failing = std::thread::spawn(move || {
                        let _cluster = cluster;
                        panic!("a failing test");
                    });
                    assert!(failing.join().is_err());
                    id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(ids[0], ids[1]);
    for id in &ids {
        assert_gone(id, &[]);
    }
}

#[test]
fn a_delayed_node_answers_late_relays_bytes_intact_and_counts_its_cpu() {
    let _shared = REAPING.read().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(&ClusterSpec::uniform(NodeKind::Trixie, 1)).unwrap();
    let node = &cluster.nodes()[0];
    let rtt = std::time::Duration::from_millis(80);
    node.delay(rtt).unwrap();
    assert_eq!(node.delayed(), rtt);
    // An OpenSSH login and command take at least five round trips (version,
    // key exchange, auth, channel, exec).
    let start = Instant::now();
    ssh_ok(&cluster, node, "root", "true");
    let took = start.elapsed();
    assert!(
        took >= 5 * rtt,
        "a login through an 80 ms relay took {took:?}"
    );

    // 16 MB each way through the relay, as they were.
    let data: Vec<u8> = (0..16_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut child = Command::new("ssh")
        .args(cluster.ssh_args(node, "root"))
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &sent));
    let mut back = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut back).unwrap();
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
    assert!(back == data, "the echo differs ({} bytes back)", back.len());

    // CPU of what sshd runs is counted, exited processes included.
    let before = node.cpu_time().expect("cpuacct cgroup");
    ssh_ok(
        &cluster,
        node,
        "root",
        "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done",
    );
    let used = node.cpu_time().unwrap() - before;
    assert!(
        used >= std::time::Duration::from_millis(100),
        "counted {used:?}"
    );

    node.delay(std::time::Duration::ZERO).unwrap();
    assert_eq!(node.delayed(), std::time::Duration::ZERO);
    ssh_ok(&cluster, node, "root", "true");
}

/// Run by `a_leaked_cluster_is_reaped` in a child process: leaks a cluster,
/// then exits when its stdin closes.
#[test]
#[ignore = "helper of a_leaked_cluster_is_reaped"]
fn leak_a_cluster() {
    if std::env::var_os("TEST_CLUSTER_LEAK").is_some() {
        let cluster = Cluster::start(
            &ClusterSpec::new()
                .node("a", NodeKind::Bare)
                .node("b", NodeKind::LocalNix),
        )
        .unwrap();
        println!("LEAKED {}", cluster.id());
        std::mem::forget(cluster);
        std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
    }
}

#[test]
fn a_leaked_cluster_is_reaped() {
    let _exclusive = REAPING.write().unwrap_or_else(|e| e.into_inner());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["leak_a_cluster", "--exact", "--ignored", "--nocapture"])
        .env("TEST_CLUSTER_LEAK", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let id = stdout
        .by_ref()
        .lines()
        .find_map(|l| l.unwrap().strip_prefix("LEAKED ").map(str::to_owned))
        .expect("the child leaked no cluster");
    let pids: Vec<u32> = (0..2)
        .flat_map(|i| {
            let out = Command::new("ip")
                .args(["netns", "pids", &format!("nd-{id}-{i}")])
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect::<Vec<u32>>()
        })
        .collect();
    assert!(pids.len() >= 4, "holder and sshd per node: {pids:?}");

    // While its owner lives, the cluster is not stale.
    reap_stale().unwrap();
    assert!(netns_list().contains(&format!("nd-{id}-1")));
    assert!(Path::new(STATE_ROOT).join(&id).exists());

    drop(child.stdin.take());
    stdout.read_to_end(&mut Vec::new()).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(netns_list().contains(&format!("nd-{id}-0")));
    assert!(reap_stale().unwrap() >= 1);
    assert_gone(&id, &pids);
}

#[test]
fn bad_specs_are_refused_before_anything_is_made() {
    // Exclusive: the other tests' clusters would change the count.
    let _exclusive = REAPING.write().unwrap_or_else(|e| e.into_inner());
    let before = std::fs::read_dir(STATE_ROOT).unwrap().count();
    let dup = ClusterSpec::new()
        .node("a", NodeKind::Bare)
        .node("a", NodeKind::Bare);
    let err = Cluster::start(&dup).unwrap_err();
    assert!(err.to_string().contains("duplicate"), "{err}");
    let too_many = ClusterSpec::uniform(NodeKind::LocalNix, 254);
    assert!(Cluster::start(&too_many).is_err());
    assert_eq!(std::fs::read_dir(STATE_ROOT).unwrap().count(), before);
}
