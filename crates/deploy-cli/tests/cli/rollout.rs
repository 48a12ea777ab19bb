//! `deploy [all|NODE...]` and `deploy --diff` end to end: the repository's
//! real flake.nix and hosts/*.nix, evaluated with nixpkgs replaced by the
//! fixture package set, deployed to throwaway VPS nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

use serde_json::Value;
use test_support::flake::{
    copy_fixture_nixpkgs, copy_flake, edit, fixture_nixpkgs, flake_ref, nix_args,
};
use test_support::run;

use crate::common;

use common::{
    cluster, deploy, deploy_options_first, deploy_sub, json, profile_target, repo_flake, MAIN,
    PROFILE, WORKER,
};

fn by_name(v: &Value) -> BTreeMap<String, Value> {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().to_owned(), n.clone()))
        .collect()
}

fn names(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The NAR bytes of `new`'s closure members that `old`'s closure lacks.
fn missing_bytes(old: &str, new: &str) -> u64 {
    let closure = |p: &str| -> BTreeMap<String, u64> {
        let text = run(Command::new("nix").args([
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "-r",
            "--json",
            p,
        ]));
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["path"].as_str().unwrap().to_owned(),
                    i["narSize"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (old, new) = (closure(old), closure(new));
    new.iter()
        .filter(|(p, _)| !old.contains_key(*p))
        .map(|(_, s)| s)
        .sum()
}

#[test]
fn deploy_all_then_diff_names_exactly_a_version_bump() {
    let cluster = cluster();
    let (main, worker) = (
        cluster.node("main").unwrap(),
        cluster.node("worker").unwrap(),
    );
    let fixture = fixture_nixpkgs();

    // Before anything: everything would be added; the nodes stay untouched.
    let store_before = main.run_ok("ls /nix/store | wc -l").unwrap();
    let out = deploy(&cluster, &repo_flake(), &fixture, &["--diff", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff = by_name(&json(&out));
    assert_eq!(
        names(&diff[MAIN]["diff"]["added"]),
        ["cowsay", "htop", "k3s", "k3s-install-script"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        names(&diff[WORKER]["diff"]["added"]),
        ["dinosay", "htop", "k3s", "k3s-install-script"]
            .map(String::from)
            .into()
    );
    assert!(diff[MAIN]["diff"]["oldProfile"].is_null());
    assert!(diff[MAIN]["diff"]["transferPaths"].as_u64().unwrap() > 3);
    assert_eq!(profile_target(main), "");
    assert_eq!(main.run_ok("ls /nix/store | wc -l").unwrap(), store_before);

    // Deploy both nodes in parallel: each profile holds exactly its host's programs.
    let out = deploy(&cluster, &repo_flake(), &fixture, &["all", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = by_name(&json(&out));
    // (systemctl: the fixture's recording stand-in, as test nodes have no systemd.)
    for (name, node, programs) in [
        (
            MAIN,
            main,
            vec![
                "cowsay",
                "crictl",
                "ctr",
                "htop",
                "k3s",
                "kubectl",
                "systemctl",
            ],
        ),
        (
            WORKER,
            worker,
            vec![
                "crictl",
                "ctr",
                "dinosay",
                "htop",
                "k3s",
                "kubectl",
                "systemctl",
            ],
        ),
    ] {
        assert_eq!(summary[name]["status"], "ok", "{:?}", summary[name]);
        let bin = node.run_ok(&format!("ls {PROFILE}/bin")).unwrap();
        assert_eq!(bin.lines().collect::<Vec<_>>(), programs, "{name}");
        assert!(node.run_ok(&format!("{PROFILE}/bin/htop")).is_ok());
    }
    let deployed_main = profile_target(main);

    // Nothing changed since: the diff is empty.
    let out = deploy(&cluster, &repo_flake(), &fixture, &["--diff", "--json"]);
    let diff = by_name(&json(&out));
    assert_eq!(diff[MAIN]["diff"]["empty"], true, "{:?}", diff[MAIN]);
    assert_eq!(diff[WORKER]["diff"]["empty"], true, "{:?}", diff[WORKER]);

    // cowsay 3.8.4 -> 3.8.5: the diff names exactly that, with the right bytes.
    let bumped = copy_fixture_nixpkgs();
    edit(
        &bumped.path().join("versions.json"),
        "\"cowsay\": \"3.8.4\"",
        "\"cowsay\": \"3.8.5\"",
    );
    let out = deploy(
        &cluster,
        &repo_flake(),
        bumped.path(),
        &["--diff", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff = by_name(&json(&out));
    let d = &diff[MAIN]["diff"];
    assert_eq!(
        d["changed"],
        serde_json::json!([{"name": "cowsay", "oldVersion": "3.8.4", "newVersion": "3.8.5"}])
    );
    assert_eq!(d["added"], serde_json::json!([]));
    assert_eq!(d["removed"], serde_json::json!([]));
    let new_profile = d["newProfile"].as_str().unwrap();
    assert_eq!(
        d["transferBytes"].as_u64().unwrap(),
        missing_bytes(&deployed_main, new_profile)
    );
    assert_eq!(diff[WORKER]["diff"]["empty"], true);
    assert_eq!(
        profile_target(main),
        deployed_main,
        "--diff changed nothing"
    );
    // The text form says the same to a person.
    let out = deploy(&cluster, &repo_flake(), bumped.path(), &["--diff", MAIN]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("~ cowsay 3.8.4 → 3.8.5"), "{text}");

    // After deploying the bump, the diff is empty again.
    assert!(deploy(&cluster, &repo_flake(), bumped.path(), &[MAIN])
        .status
        .success());
    assert_eq!(profile_target(main), new_profile);
    let gens = main
        .run_ok(&format!("nix-env --list-generations -p {PROFILE}"))
        .unwrap();
    assert_eq!(gens.lines().count(), 2, "{gens}");
    let out = deploy(
        &cluster,
        &repo_flake(),
        bumped.path(),
        &["--diff", "--json"],
    );
    assert_eq!(by_name(&json(&out))[MAIN]["diff"]["empty"], true);
}

#[test]
fn deploy_compresses_through_the_receiver_on_every_node() {
    let cluster = cluster();
    let receiver = test_support::receiver_package();
    let out = deploy(
        &cluster,
        &repo_flake(),
        &fixture_nixpkgs(),
        &[
            "--goal",
            "push",
            "--compression",
            "yes",
            "--receiver",
            &receiver,
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let zstd: BTreeSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "compression" && e["method"] == "zstd")
        .map(|e| e["node"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(zstd, [MAIN, WORKER].map(String::from).into(), "{text}");
    for node in cluster.nodes() {
        node.verify_store().unwrap();
        assert!(
            node.run_ok(&format!(
                "test -x {receiver}/bin/nix-deploy-receive && echo yes"
            ))
            .unwrap()
            .contains("yes"),
            "{}",
            node.name()
        );
    }
}

#[test]
fn deploy_all_feeds_the_second_node_from_the_first_and_says_so() {
    let cluster = cluster();
    let relay = test_support::relay_package();
    // The preview says what crosses the uplink: the shared paths once.
    let preview = json(&deploy(
        &cluster,
        &repo_flake(),
        &fixture_nixpkgs(),
        &["--diff", "--json", "--relay", &relay],
    ));
    let uplink = &preview["uplink"];
    assert_eq!(uplink["fanOut"], true, "{preview}");
    let (once, direct) = (
        uplink["bytes"].as_u64().unwrap(),
        uplink["directBytes"].as_u64().unwrap(),
    );
    let sum: u64 = preview["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["diff"]["transferBytes"].as_u64().unwrap())
        .sum();
    assert!(0 < once && once < direct && direct == sum, "{preview}");
    let args = ["--goal", "switch", "--relay", &relay, "--json"];
    let out = deploy(&cluster, &repo_flake(), &fixture_nixpkgs(), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let sources: Vec<(String, Value)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "source")
        .map(|e| (e["node"].as_str().unwrap().to_owned(), e))
        .collect();
    assert_eq!(sources.len(), 2, "{text}");
    let seed = sources
        .iter()
        .find(|(_, e)| e["seed"] == true)
        .map(|(n, _)| n.clone())
        .expect("a seed");
    let fed = sources.iter().find(|(n, _)| *n != seed).unwrap();
    assert_eq!(fed.1["from"], seed.as_str(), "{text}");
    for node in cluster.nodes() {
        node.verify_store().unwrap();
        assert!(!profile_target(node).is_empty(), "{}", node.name());
        let keys = node.run_ok("cat /root/.ssh/authorized_keys").unwrap();
        assert!(!keys.contains("nix-deploy-relay"), "{keys}");
    }
    // The relay went to the seed only.
    let has_relay = |name: &str| {
        let node = if name == MAIN { "main" } else { "worker" };
        cluster
            .node(node)
            .unwrap()
            .run_ok(&format!(
                "test -x {relay}/bin/nix-deploy-relay && echo yes || echo no"
            ))
            .unwrap()
    };
    assert_eq!(has_relay(&seed), "yes\n");
    assert_eq!(has_relay(&fed.0), "no\n");
}

#[test]
fn a_node_that_is_down_fails_alone_with_a_partial_exit_code() {
    let cluster = cluster();
    let worker = cluster.node("worker").unwrap();
    worker.stop_sshd();
    let out = deploy(&cluster, &repo_flake(), &fixture_nixpkgs(), &["--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = by_name(&json(&out));
    assert_eq!(summary[MAIN]["status"], "ok");
    assert_eq!(summary[WORKER]["status"], "failed");
    let error = summary[WORKER]["error"].as_str().unwrap();
    assert!(error.contains(&worker.ip().to_string()), "{error}");
    assert!(!profile_target(cluster.node("main").unwrap()).is_empty());

    // -q: only the failure; -v: a line per step.
    let out = deploy(&cluster, &repo_flake(), &fixture_nixpkgs(), &["-q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(!err.contains("STATUS") && err.contains(WORKER), "{err}");
    let out = deploy(&cluster, &repo_flake(), &fixture_nixpkgs(), &["-v", MAIN]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("{MAIN}: connecting")), "{err}");
    assert!(err.contains(&format!("{MAIN}: profile switched")), "{err}");
    assert!(err.contains("STATUS"), "{err}");
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let cluster = cluster();
    let main = cluster.node("main").unwrap();
    let fixture = fixture_nixpkgs();
    let check = |out: Output, expect: &[&str]| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        for e in expect {
            assert!(err.contains(e), "expected {e:?} in: {err}");
        }
        assert_eq!(profile_target(main), "", "nothing reached the node");
    };
    check(
        deploy(&cluster, &repo_flake(), &fixture, &["nope"]),
        &["nope", MAIN, WORKER],
    );

    let broken = copy_flake();
    edit(
        &broken.path().join("flake.nix"),
        "name = \"k8s\";",
        "name = throw \"inventory broken on purpose\";",
    );
    check(
        deploy(&cluster, &flake_ref(broken.path()), &fixture, &[]),
        &["inventory broken on purpose"],
    );

    let no_address = copy_flake();
    edit(
        &no_address.path().join("flake.nix"),
        "hostname = \"203.0.113.11\";",
        "",
    );
    check(
        deploy(&cluster, &flake_ref(no_address.path()), &fixture, &[]),
        &[WORKER, "hostname"],
    );

    let bad_role = copy_flake();
    edit(
        &bad_role.path().join("flake.nix"),
        "role = \"agent\";",
        "role = \"boss\";",
    );
    check(
        deploy(&cluster, &flake_ref(bad_role.path()), &fixture, &[]),
        &[WORKER, "boss", "server", "agent"],
    );

    let fails_to_build = copy_flake();
    let host = fails_to_build.path().join("hosts/k8s-cluster-node-1.nix");
    edit(
        &host,
        "pkgs.k3s",
        "pkgs.k3s\n    (pkgs.runCommand \"broken-on-purpose\" { } \"exit 1\")",
    );
    check(
        deploy(&cluster, &flake_ref(fails_to_build.path()), &fixture, &[]),
        &["broken-on-purpose"],
    );

    let out = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .arg("--flake")
        .arg(repo_flake())
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    check(out, &["nix not found on PATH", "apt-get install nix-bin"]);
}

#[test]
fn generations_and_rollback_of_an_inventory_node() {
    let cluster = cluster();
    let main = cluster.node("main").unwrap();
    let fixture = fixture_nixpkgs();
    let bumped = copy_fixture_nixpkgs();
    edit(
        &bumped.path().join("versions.json"),
        "\"cowsay\": \"3.8.4\"",
        "\"cowsay\": \"3.8.5\"",
    );
    let ok = |out: Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(deploy(&cluster, &repo_flake(), &fixture, &[MAIN]));
    let first = profile_target(main);
    ok(deploy(&cluster, &repo_flake(), bumped.path(), &[MAIN]));
    let second = profile_target(main);
    assert_ne!(first, second);

    let out = ok(deploy_sub(
        &cluster,
        &["generations", MAIN],
        &repo_flake(),
        &fixture,
        &["--json"],
    ));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let gens = v["generations"].as_array().unwrap();
    let listed: Vec<(u64, &str, bool)> = gens
        .iter()
        .map(|g| {
            (
                g["number"].as_u64().unwrap(),
                g["path"].as_str().unwrap(),
                g["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![(1, first.as_str(), false), (2, second.as_str(), true)]
    );
    let text = ok(deploy_sub(
        &cluster,
        &["generations", MAIN],
        &repo_flake(),
        &fixture,
        &[],
    ));
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .ends_with(&format!("{second}  (current)")),
        "{text}"
    );

    let out = ok(deploy_sub(
        &cluster,
        &["rollback", MAIN],
        &repo_flake(),
        &fixture,
        &[],
    ));
    assert!(out.contains("now on generation 1"), "{out}");
    assert_eq!(profile_target(main), first);
    let gens = main
        .run_ok(&format!("nix-env --list-generations -p {PROFILE}"))
        .unwrap();
    assert!(gens.lines().next().unwrap().contains("(current)"), "{gens}");

    let out = deploy_sub(
        &cluster,
        &["rollback", MAIN],
        &repo_flake(),
        &fixture,
        &["--to", "99"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no generation 99; it has 1, 2"), "{err}");
    assert_eq!(profile_target(main), first);
    // Global options may come before the subcommand.
    ok(deploy_options_first(
        &cluster,
        &["rollback", MAIN],
        &repo_flake(),
        &fixture,
        &["--to", "2"],
    ));
    assert_eq!(profile_target(main), second);
}

#[test]
fn prepare_reports_each_node_and_trusts_the_key_once() {
    let cluster = cluster();
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("signing-key");
    let prepare = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
        c.arg("prepare")
            .arg("--json")
            .arg("--signing-key")
            .arg(&key);
        c.arg("--flake")
            .arg(repo_flake())
            .args(nix_args(&fixture_nixpkgs()));
        c.args(["--no-agent", "--ssh-config", "none"]);
        c.arg("-i").arg(cluster.client_key());
        c.arg("--known-hosts").arg(cluster.known_hosts());
        for (name, node) in [(MAIN, "main"), (WORKER, "worker")] {
            let ip = cluster.node(node).unwrap().ip();
            c.arg("--target").arg(format!("{name}=root@{ip}"));
        }
        c.output().unwrap()
    };
    let out = prepare();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes = by_name(&json(&out));
    assert_eq!(nodes[MAIN]["nixVersion"], "2.26.3");
    assert_eq!(nodes[WORKER]["nixVersion"], "2.8.0");
    assert_eq!(nodes[MAIN]["keyTrusted"], "added");
    let again = by_name(&json(&prepare()));
    assert_eq!(again[MAIN]["keyTrusted"], "already");
    assert_eq!(again[WORKER]["keyTrusted"], "already");
}
