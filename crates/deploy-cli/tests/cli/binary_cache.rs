//! `cluster.cache` end to end: the deploy pushes what a real binary-cache
//! server lacks (Debian's nginx taking PUTs; moto's S3 server), `deploy
//! prepare` makes the nodes list it, and the nodes' real Nix (2.26 and
//! 2.8) substitute from it instead of receiving the paths; a cache that is
//! down leaves the deploy to direct copies.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use test_cluster::{CacheServer, Cluster};
use test_support::flake::{copy_flake, edit, fixture_nixpkgs, flake_ref, nix_args};

use crate::common;

use common::{cluster, deploy_command, profile_target, MAIN};

/// A copy of the repository's flake whose cluster has `cache` (a Nix
/// attribute set's body).
fn flake_with_cache(cache: &str) -> tempfile::TempDir {
    let dir = copy_flake();
    edit(
        &dir.path().join("flake.nix"),
        "acmeEmail = \"admin@example.com\";",
        &format!("acmeEmail = \"admin@example.com\";\n          cache = {{ {cache} }};"),
    );
    dir
}

/// `deploy SUB ARGS` on `flake` with the signing key `key` and `env`.
fn run(
    cluster: &Cluster,
    flake: &Path,
    key: &Path,
    sub: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut c: Command = deploy_command(
        cluster,
        sub,
        &flake.display().to_string(),
        &fixture_nixpkgs(),
        args,
    );
    c.arg("--signing-key").arg(key);
    c.envs(env.iter().copied());
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "deploy {sub:?} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The JSON events of a `--json` run.
fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {events:?}"))
}

/// Every node's summary line: what the deployer itself sent it.
fn sent_paths(events: &[Value]) -> Vec<u64> {
    event(events, "summary")["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["sentPaths"].as_u64().unwrap())
        .collect()
}

/// Deploys through `cache` (already in the flake at `flake`): prepare,
/// then a deploy that pushes and lets the nodes substitute everything;
/// returns the deploy's events.
fn deploy_through_cache(
    cluster: &Cluster,
    flake: &Path,
    key: &Path,
    substituter: &str,
    env: &[(&str, &str)],
) -> Vec<Value> {
    run(cluster, flake, key, &["prepare"], &["--json"], env);
    for node in cluster.nodes() {
        let conf = node.run_ok("cat /etc/nix/nix.conf").unwrap();
        assert!(
            conf.contains(&format!("extra-substituters = {substituter}\n")),
            "{conf}"
        );
    }
    let out = run(
        cluster,
        flake,
        key,
        &[],
        &["--goal", "switch", "--json"],
        env,
    );
    let events = events(&out);
    let pushed = event(&events, "cachePushed");
    assert!(pushed["uploadedPaths"].as_u64().unwrap() > 0, "{pushed}");
    assert_eq!(pushed["presentPaths"], 0, "{pushed}");
    // Nothing went from here to the nodes: each fetched its closure from
    // the cache itself.
    assert_eq!(sent_paths(&events), vec![0, 0], "{events:?}");
    // Each node fetched its paths as they landed in the cache, in batches.
    let mut substituted: std::collections::BTreeMap<&str, u64> = Default::default();
    for e in events.iter().filter(|e| e["event"] == "substituted") {
        *substituted.entry(e["node"].as_str().unwrap()).or_default() +=
            e["paths"].as_u64().unwrap();
    }
    assert_eq!(substituted.len(), 2, "{events:?}");
    assert!(substituted.values().all(|&n| n > 0), "{substituted:?}");
    assert!(!events.iter().any(|e| e["event"] == "source"), "no fan-out");
    for node in cluster.nodes() {
        node.verify_store().unwrap();
        assert!(!profile_target(node).is_empty(), "{}", node.name());
    }
    events
}

#[test]
fn an_http_cache_is_filled_once_and_every_node_substitutes_from_it() {
    let cluster = cluster();
    let root = tempfile::tempdir().unwrap();
    let server = CacheServer::nginx(cluster.nodes()[0].host_ip(), root.path()).unwrap();
    let url = server.url();
    let flake = flake_with_cache(&format!("url = \"{url}\";"));
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("signing-key");
    let preview = |cluster: &Cluster| {
        let out = run(cluster, flake.path(), &key, &[], &["--diff", "--json"], &[]);
        events(&out).pop().expect("the preview")["cache"].clone()
    };
    let before = preview(&cluster);
    assert_eq!(before["url"], url.as_str(), "{before}");
    let first = deploy_through_cache(&cluster, flake.path(), &key, &url, &[]);
    let pushed = event(&first, "cachePushed");
    let uploaded = pushed["uploadedPaths"].as_u64().unwrap();
    // The preview said what the push would upload; now nothing is lacking.
    assert_eq!(before["missingPaths"].as_u64(), Some(uploaded), "{before}");
    assert_eq!(before["missingBytes"], pushed["narBytes"], "{before}");
    assert_eq!(preview(&cluster)["missingPaths"], 0);

    // The cache holds Nix's format: signed narinfos, zstd NARs.
    let narinfos: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "narinfo"))
        .collect();
    assert_eq!(narinfos.len() as u64, uploaded);
    let key_name = std::fs::read_to_string(&key).unwrap();
    let key_name = key_name.split(':').next().unwrap();
    for narinfo in &narinfos {
        let text = std::fs::read_to_string(narinfo).unwrap();
        assert!(text.contains("Compression: zstd\n"), "{text}");
        assert!(text.contains(&format!("Sig: {key_name}:")), "{text}");
    }
    assert!(root.path().join("nix-cache-info").exists());

    // A cache that lost some paths gets exactly those again.
    for narinfo in &narinfos[..3] {
        std::fs::remove_file(narinfo).unwrap();
    }
    let out = run(
        &cluster,
        flake.path(),
        &key,
        &[],
        &["--goal", "push", "--json"],
        &[],
    );
    let again = events(&out);
    // The nodes have every path already: following the cache fetches
    // nothing, and nothing is sent.
    assert_eq!(sent_paths(&again), vec![0, 0], "{again:?}");
    let checked = event(&again, "cacheChecked");
    assert_eq!(checked["missingPaths"], 3, "{checked}");
    assert_eq!(event(&again, "cachePushed")["uploadedPaths"], 3);
}

#[test]
fn an_s3_cache_is_filled_through_the_s3_api_and_nodes_read_it_over_http() {
    let cluster = cluster();
    let server = CacheServer::s3(cluster.nodes()[0].host_ip(), "nix-cache").unwrap();
    let endpoint = server.url();
    let substituter = server.bucket_url().unwrap();
    let flake = flake_with_cache(&format!(
        "url = \"s3://nix-cache?endpoint={endpoint}&region=eu-central-1\"; \
         substituter = \"{substituter}\";"
    ));
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("signing-key");
    let env = [
        ("AWS_ACCESS_KEY_ID", "nix-deploy-test"),
        ("AWS_SECRET_ACCESS_KEY", "nix-deploy-test-secret"),
    ];
    // The control plane holds part of its closure already (none of it is
    // in the cache): it still follows the cache for the rest, and
    // nothing comes from the deployer.
    let built = run_nix(&[
        "build",
        "--no-link",
        "--json",
        &format!("{}#deploy.nodes.{MAIN}.profile", flake_ref(flake.path())),
    ]);
    let built: Value = serde_json::from_str(&built).unwrap();
    let profile = built[0]["outputs"]["out"].as_str().unwrap();
    let closure = run_nix(&["path-info", "-r", profile]);
    let some: Vec<&str> = closure.lines().step_by(2).take(6).collect();
    let main = cluster.node("main").unwrap();
    let mut copy = Command::new(env!("CARGO_BIN_EXE_deploy"));
    copy.args(["copy", "--no-agent", "--ssh-config", "none", "--json"])
        .arg("--to")
        .arg(format!("root@{}", main.ip()))
        .arg("-i")
        .arg(cluster.client_key())
        .arg("--known-hosts")
        .arg(cluster.known_hosts())
        .args(&some);
    let out = copy.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deploy_through_cache(&cluster, flake.path(), &key, &substituter, &env);
}

/// `nix ARGS` with nixpkgs replaced by the fixture; its stdout.
fn run_nix(args: &[&str]) -> String {
    test_support::run(
        Command::new("nix")
            .args(["--extra-experimental-features", "nix-command flakes"])
            .args(args)
            .args(nix_args(&fixture_nixpkgs())),
    )
}

#[test]
fn a_cache_that_is_down_leaves_the_nodes_to_direct_copies() {
    let cluster = cluster();
    // Nothing listens there.
    let url = format!("http://{}:9", cluster.nodes()[0].host_ip());
    let flake = flake_with_cache(&format!("url = \"{url}\";"));
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("signing-key");
    run(&cluster, flake.path(), &key, &["prepare"], &["--json"], &[]);
    let out = run(
        &cluster,
        flake.path(),
        &key,
        &[],
        &["--diff", "--json"],
        &[],
    );
    let preview = events(&out).pop().expect("the preview");
    assert!(
        preview["cache"]["error"].as_str().unwrap().contains(&url),
        "{preview}"
    );
    let out = run(
        &cluster,
        flake.path(),
        &key,
        &[],
        &["--goal", "switch", "--json"],
        &[],
    );
    let events = events(&out);
    let failed = event(&events, "cacheFailed");
    assert_eq!(failed["cache"], url.as_str());
    assert!(
        failed["error"].as_str().unwrap().contains("reachable"),
        "{failed}"
    );
    assert!(sent_paths(&events).iter().all(|&n| n > 0), "{events:?}");
    for node in cluster.nodes() {
        node.verify_store().unwrap();
        assert!(!profile_target(node).is_empty(), "{}", node.name());
    }
}
