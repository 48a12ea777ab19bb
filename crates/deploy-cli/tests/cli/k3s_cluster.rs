//! `deploy all`'s k3s stage end to end, against the recording stand-ins
//! the fixture's profiles carry (k3s, kubectl, systemctl and the install
//! script; k3s itself can't run here): what the install script gets per
//! role, the units it writes, servers before agents, the join token kept
//! out of every argv and log, reruns that change nothing, a changed flag
//! that restarts one node, and the errors for a server that never gets
//! ready and an agent that can't reach its server; and on nodes booted with
//! real systemd, the units enabled and run as `Type=notify` services, left
//! alone by a rerun and restarted by the real `systemctl` for a new flag.

use crate::common;

use std::collections::BTreeSet;
use std::process::Output;

use common::{deploy, repo_flake, MAIN, WORKER};
use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::flake::{copy_fixture_nixpkgs, copy_flake, edit, fixture_nixpkgs, flake_ref};

const LOG: &str = "/var/log/k3s-fixture.log";
const MANIFESTS: &str = "/var/lib/rancher/k3s/server/manifests";
const TOKEN_FILE: &str = "/etc/rancher/k3s/nix-deploy-token";

/// Two Debian 13 nodes: `main` for the control plane, `worker` for the agent.
fn cluster() -> Cluster {
    Cluster::start(
        &ClusterSpec::new()
            .node("main", NodeKind::Trixie)
            .node("worker", NodeKind::Trixie),
    )
    .unwrap()
}

/// One stand-in call: the program, its arguments, when, its environment.
#[derive(Debug, Default)]
struct Call {
    prog: String,
    args: Vec<String>,
    time: u128,
    env: BTreeSet<String>,
}

/// The calls recorded on `node`.
fn calls(node: &Node) -> Vec<Call> {
    let log = node
        .run_ok(&format!("cat {LOG} 2>/dev/null || true"))
        .unwrap();
    let mut calls: Vec<Call> = Vec::new();
    for line in log.lines() {
        let mut f = line.split('\t');
        let (kind, prog) = (f.next().unwrap_or(""), f.next().unwrap_or("").to_owned());
        let rest: Vec<String> = f.map(str::to_owned).collect();
        match kind {
            "call" => calls.push(Call {
                prog,
                args: rest,
                ..Call::default()
            }),
            "time" => calls.last_mut().unwrap().time = rest[0].parse().unwrap(),
            "env" => {
                calls.last_mut().unwrap().env.insert(rest[0].clone());
            }
            _ => {}
        }
    }
    calls
}

/// The calls that install or restart: the install script and `systemctl restart`.
fn changes(node: &Node) -> Vec<String> {
    calls(node)
        .into_iter()
        .filter(|c| c.prog == "install.sh" || (c.prog == "systemctl" && c.args[0] == "restart"))
        .map(|c| format!("{} {}", c.prog, c.args.join(" ")))
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output) -> String {
    let all = text(out);
    assert!(out.status.success(), "deploy failed: {all}");
    all
}

#[test]
fn servers_first_token_kept_secret_reruns_idempotent_and_a_flag_restarts_one_node() {
    let cluster = cluster();
    let (main, worker) = (
        cluster.node("main").unwrap(),
        cluster.node("worker").unwrap(),
    );
    let nixpkgs = fixture_nixpkgs();

    // The dry run shows every command and file of both stages per node,
    // manifests in full, the token masked, and touches no node.
    let dry = deploy(&cluster, &repo_flake(), &nixpkgs, &["--dry-run", "all"]);
    let plan = ok(&dry);
    for expected in [
        "k3s: run: env -i PATH=/nix/var/nix/profiles/nix-deploy/bin:",
        " sh /nix/var/nix/profiles/nix-deploy/share/k3s/install.sh server --node-name k8s-cluster-main --disable traefik ",
        " K3S_TOKEN_FILE=/etc/rancher/k3s/nix-deploy-token sh /nix/var/nix/profiles/nix-deploy/share/k3s/install.sh agent --node-name k8s-cluster-node-1",
        "k3s: write /etc/rancher/k3s/nix-deploy-token (mode 0600):\n    | <join token of k8s-cluster-main, masked>",
        "ingress: write /var/lib/rancher/k3s/server/manifests/nix-deploy-traefik.yaml (mode 0600):",
        "    | kind: HelmChart",
        "    | kind: ClusterIssuer",
        "wait (up to 300 s): node k8s-cluster-node-1 is Ready",
    ] {
        assert!(plan.contains(expected), "{expected:?} missing from the dry run:\n{plan}");
    }
    assert!(
        calls(main).is_empty() && calls(worker).is_empty(),
        "the dry run touched a node"
    );

    let first = deploy(
        &cluster,
        &repo_flake(),
        &nixpkgs,
        &["-vv", "--k3s-timeout", "30", "all"],
    );
    let mut output = ok(&first);

    // The install script per role: exact arguments and environment.
    let profile = "/nix/var/nix/profiles/nix-deploy";
    let base_env = [
        format!("INSTALL_K3S_BIN_DIR={profile}/bin"),
        "INSTALL_K3S_BIN_DIR_READ_ONLY=true".to_owned(),
        "INSTALL_K3S_SKIP_DOWNLOAD=true".to_owned(),
        "INSTALL_K3S_SKIP_START=true".to_owned(),
    ];
    let server_calls = calls(main);
    let install = server_calls
        .iter()
        .find(|c| c.prog == "install.sh")
        .expect("server install");
    let main_ip = main.ip().to_string();
    assert_eq!(
        install.args,
        [
            "server",
            "--node-name",
            MAIN,
            "--disable",
            "traefik",
            "--tls-san",
            "203.0.113.10",
            "--tls-san",
            &main_ip
        ]
    );
    assert_eq!(
        install.env,
        base_env.iter().cloned().collect::<BTreeSet<_>>()
    );
    let agent_calls = calls(worker);
    let join = agent_calls
        .iter()
        .find(|c| c.prog == "install.sh")
        .expect("agent install");
    assert_eq!(join.args, ["agent", "--node-name", WORKER]);
    let mut agent_env: BTreeSet<String> = base_env.iter().cloned().collect();
    agent_env.insert(format!("K3S_URL=https://{main_ip}:6443"));
    agent_env.insert(format!("K3S_TOKEN_FILE={TOKEN_FILE}"));
    assert_eq!(join.env, agent_env);

    // The units the script wrote.
    let unit = main.run_ok("cat /etc/systemd/system/k3s.service").unwrap();
    assert!(unit.contains(&format!(
        "ExecStart={profile}/bin/k3s server '--node-name' '{MAIN}' '--disable' 'traefik' '--tls-san' '203.0.113.10' '--tls-san' '{main_ip}'\n"
    )), "{unit}");
    let agent_unit = worker
        .run_ok("cat /etc/systemd/system/k3s-agent.service")
        .unwrap();
    assert!(
        agent_unit.contains(&format!(
            "ExecStart={profile}/bin/k3s agent '--node-name' '{WORKER}'\n"
        )),
        "{agent_unit}"
    );
    let agent_env_file = worker
        .run_ok("stat -c %a /etc/systemd/system/k3s-agent.service.env; cat /etc/systemd/system/k3s-agent.service.env")
        .unwrap();
    assert_eq!(
        agent_env_file,
        format!("600\nK3S_TOKEN_FILE={TOKEN_FILE}\nK3S_URL=https://{main_ip}:6443\n")
    );

    // Servers first: the server's k3s was up before the agent's install began.
    let server_up = server_calls
        .iter()
        .find(|c| c.prog == "k3s" && c.args.contains(&"--raw=/readyz".to_owned()))
        .expect("readyz asked")
        .time;
    assert!(
        server_up < join.time,
        "the agent was installed before the server answered"
    );

    // The token: on the agent in a 0600 file, nowhere else.
    let token = main
        .run_ok("cat /var/lib/rancher/k3s/server/token")
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.starts_with("K10") && token.len() > 40, "{token}");
    let token_file = worker
        .run_ok(&format!("stat -c %a {TOKEN_FILE}; cat {TOKEN_FILE}"))
        .unwrap();
    assert_eq!(token_file, format!("600\n{token}\n"));

    // The ingress stack is on the server only.
    let ours =
        "nix-deploy-cert-manager.yaml\nnix-deploy-cluster-issuers.yaml\nnix-deploy-traefik.yaml\n";
    assert_eq!(main.run_ok(&format!("ls {MANIFESTS}")).unwrap(), ours);
    assert!(worker
        .run_ok(&format!("ls {MANIFESTS} 2>&1 || true"))
        .unwrap()
        .contains("No such file"));
    let stamp = format!("stat -c %Y.%i {MANIFESTS}/*");
    let manifests_before = main.run_ok(&stamp).unwrap();

    // A rerun (as JSON) installs, restarts and rewrites nothing.
    let before = (changes(main), changes(worker));
    let rerun = deploy(
        &cluster,
        &repo_flake(),
        &nixpkgs,
        &["--json", "--k3s-timeout", "30", "all"],
    );
    output += &ok(&rerun);
    assert_eq!(
        (changes(main), changes(worker)),
        before,
        "a rerun changed something"
    );
    assert!(output.contains("k3s agent unchanged"), "{output}");
    assert_eq!(main.run_ok(&stamp).unwrap(), manifests_before);

    // A flag added to the worker: only the worker reinstalls and restarts.
    // And a workload manifest from the flake lands beside ours.
    let flake = copy_flake();
    edit(
        &flake.path().join("flake.nix"),
        "role = \"agent\";",
        "role = \"agent\";\n            k3s.extraFlags = [ \"--node-label\" \"tier=web\" ];",
    );
    edit(
        &flake.path().join("flake.nix"),
        "acmeEmail = \"admin@example.com\";",
        "acmeEmail = \"admin@example.com\";\n          manifests.\"hello.yaml\" = \"apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: hello\\n\";",
    );
    let changed = deploy(
        &cluster,
        &flake_ref(flake.path()),
        &nixpkgs,
        &["-v", "--k3s-timeout", "30", "all"],
    );
    output += &ok(&changed);
    assert_eq!(changes(main), before.0, "the server was touched");
    let worker_now = changes(worker);
    assert_eq!(
        worker_now[before.1.len()..],
        [
            format!("install.sh agent --node-name {WORKER} --node-label tier=web"),
            "systemctl restart k3s-agent".to_owned()
        ]
    );
    let hello = main.run_ok(&format!("cat {MANIFESTS}/hello.yaml")).unwrap();
    assert_eq!(
        hello,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n"
    );
    // Dropped from the flake, it is removed from the node.
    output += &ok(&deploy(
        &cluster,
        &repo_flake(),
        &nixpkgs,
        &["--k3s-timeout", "30", "all"],
    ));
    assert_eq!(main.run_ok(&format!("ls {MANIFESTS}")).unwrap(), ours);

    // A new k3s binary: both nodes reinstall and restart, once each.
    let (main_before, worker_before) = (changes(main).len(), changes(worker).len());
    let bumped = copy_fixture_nixpkgs();
    edit(
        &bumped.path().join("versions.json"),
        "\"k3s\": \"1.35.6+k3s1\"",
        "\"k3s\": \"1.35.7+k3s1\"",
    );
    output += &ok(&deploy(
        &cluster,
        &repo_flake(),
        bumped.path(),
        &["--k3s-timeout", "30", "all"],
    ));
    assert_eq!(
        changes(main)[main_before..],
        [
            format!("install.sh server --node-name {MAIN} --disable traefik --tls-san 203.0.113.10 --tls-san {main_ip}"),
            "systemctl restart k3s".to_owned()
        ]
    );
    assert_eq!(
        changes(worker)[worker_before..],
        [
            format!("install.sh agent --node-name {WORKER}"),
            "systemctl restart k3s-agent".to_owned()
        ]
    );

    // The token is in no recorded argv, environment or stdin, and in none
    // of our output (-vv logs, progress lines, --json).
    for node in [main, worker] {
        let log = node.run_ok(&format!("cat {LOG}")).unwrap();
        assert!(
            !log.contains(&token),
            "the token is in {}'s records",
            node.name()
        );
    }
    assert!(!output.contains(&token), "the token is in our output");
}

#[test]
fn a_server_that_never_gets_ready_fails_both_nodes_with_its_last_answer() {
    let cluster = cluster();
    let main = cluster.node("main").unwrap();
    main.run_ok("mkdir -p /etc/k3s-fixture && touch /etc/k3s-fixture/never-ready")
        .unwrap();
    let out = deploy(
        &cluster,
        &repo_flake(),
        &fixture_nixpkgs(),
        &["--k3s-timeout", "3", "all"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(4), "{all}");
    assert!(
        all.contains(&format!("{MAIN}: the k3s API did not answer within 3 s"))
            && all.contains("was refused"),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "{WORKER}: not joined: its server {MAIN} failed in this deploy"
        )),
        "{all}"
    );
    // Neither node joined anything: the agent never ran the install script.
    assert!(changes(cluster.node("worker").unwrap()).is_empty());

    // No ACME email: refused before any node is touched.
    let flake = copy_flake();
    edit(
        &flake.path().join("flake.nix"),
        "acmeEmail = \"admin@example.com\";",
        "acmeEmail = \"\";",
    );
    let out = deploy(
        &cluster,
        &flake_ref(flake.path()),
        &fixture_nixpkgs(),
        &["all"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("acmeEmail"), "{all}");
}

#[test]
fn an_agent_that_cannot_reach_its_server_says_so() {
    let cluster = cluster();
    let (main, worker) = (
        cluster.node("main").unwrap(),
        cluster.node("worker").unwrap(),
    );
    // The worker can reach us (SSH) but not the server.
    worker
        .run_ok(&format!("ip route add prohibit {}/32", main.ip()))
        .unwrap();
    let out = deploy(
        &cluster,
        &repo_flake(),
        &fixture_nixpkgs(),
        &["--k3s-timeout", "10", "all"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(
        all.contains(&format!(
            "{WORKER} can't reach the k3s server at https://{}:6443",
            main.ip()
        )),
        "{all}"
    );
    assert!(changes(worker).is_empty(), "the agent was installed anyway");
}

/// `systemctl show -p PROPERTY --value UNIT` on `node`, trimmed.
fn unit_property(node: &Node, unit: &str, property: &str) -> String {
    node.run_ok(&format!("systemctl show -p {property} --value {unit}"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn under_real_systemd_k3s_units_are_notify_services_restarted_only_for_a_changed_flag() {
    // Both nodes booted with systemd: the install script's units are
    // enabled and started by the real systemctl (the profile's stand-in
    // records, then hands over), and the stand-in k3s tells systemd it is
    // ready, as Type=notify wants.
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .systemd_node("main", NodeKind::Trixie)
            .systemd_node("worker", NodeKind::Trixie),
    )
    .unwrap();
    let nixpkgs = fixture_nixpkgs();
    let args = ["--k3s-timeout", "60", "all"];
    ok(&deploy(&cluster, &repo_flake(), &nixpkgs, &args));
    let units = [
        (cluster.node("main").unwrap(), "k3s.service"),
        (cluster.node("worker").unwrap(), "k3s-agent.service"),
    ];
    let mut invocations = Vec::new();
    for (node, unit) in units {
        let state = node
            .run_ok(&format!(
                "systemctl is-enabled {unit}; systemctl is-active {unit}"
            ))
            .unwrap();
        assert_eq!(state, "enabled\nactive\n", "{unit} on {}", node.name());
        assert_eq!(unit_property(node, unit, "Type"), "notify");
        assert_ne!(unit_property(node, unit, "MainPID"), "0");
        invocations.push(unit_property(node, unit, "InvocationID"));
    }
    // The server listens and wrote its token; the agent got it.
    let main = cluster.node("main").unwrap();
    let up = main
        .run_ok(
            "test -s /var/lib/rancher/k3s/server/token && \
             perl -MIO::Socket::INET -e 'IO::Socket::INET->new(q(127.0.0.1:6443)) or exit 1' && echo up",
        )
        .unwrap();
    assert_eq!(up, "up\n");

    // Again, nothing changed: neither unit is restarted.
    ok(&deploy(&cluster, &repo_flake(), &nixpkgs, &args));
    for ((node, unit), before) in units.iter().zip(&invocations) {
        assert_eq!(
            &unit_property(node, unit, "InvocationID"),
            before,
            "{unit} on {} was restarted by a rerun that changed nothing",
            node.name()
        );
    }

    // A flag added to the worker: the real systemctl restarts the agent,
    // which runs with the flag, and leaves the server alone.
    let flake = copy_flake();
    edit(
        &flake.path().join("flake.nix"),
        "role = \"agent\";",
        "role = \"agent\";\n            k3s.extraFlags = [ \"--node-label\" \"tier=web\" ];",
    );
    ok(&deploy(&cluster, &flake_ref(flake.path()), &nixpkgs, &args));
    let [(main, server), (worker, agent)] = units;
    assert_eq!(
        unit_property(main, server, "InvocationID"),
        invocations[0],
        "the server was restarted for the worker's flag"
    );
    assert_ne!(
        unit_property(worker, agent, "InvocationID"),
        invocations[1],
        "the agent was not restarted for its new flag"
    );
    assert_eq!(
        worker
            .run_ok(&format!("systemctl is-active {agent}"))
            .unwrap(),
        "active\n"
    );
    let pid = unit_property(worker, agent, "MainPID");
    let argv = worker
        .run_ok(&format!("tr '\\0' ' ' < /proc/{pid}/cmdline"))
        .unwrap();
    assert!(argv.contains("--node-label tier=web"), "{argv}");
}
