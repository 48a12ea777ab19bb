//! The inventory and profile builds, evaluated from the repository's real
//! flake.nix and hosts/*.nix with nixpkgs replaced by the fixture package
//! set (`--override-input nixpkgs path:tests/fixtures/nixpkgs`); broken
//! inventories are edited copies of the real flake.

use std::path::Path;

use crate::flake_support::*;
use nix_deploy::install::InstallMethod;
use nix_deploy::inventory::{build_profiles, Inventory, InventoryError, Role};
use nix_deploy::nix_cli::{NixCli, NixError};

/// Loads the inventory of an edited copy of the flake.
async fn load_edited(edits: &[(&str, &str)]) -> Result<Inventory, InventoryError> {
    let dir = copy_flake();
    for (from, to) in edits {
        edit(&dir.path().join("flake.nix"), from, to);
    }
    Inventory::load(&nix_with(dir.path(), &fixture_nixpkgs())).await
}

#[tokio::test]
async fn inventory_has_both_nodes_and_the_cluster_settings() {
    let nix = repo_nix();
    let inv = Inventory::load(&nix).await.expect("inventory loads");
    assert_eq!(
        inv.nodes.keys().collect::<Vec<_>>(),
        ["k8s-cluster-main", "k8s-cluster-node-1"]
    );
    let main = &inv.nodes["k8s-cluster-main"];
    assert_eq!(main.hostname, "203.0.113.10");
    assert_eq!(main.role, Role::Server);
    assert_eq!((main.ssh_user.as_str(), main.ssh_port), ("root", 22));
    assert_eq!(main.system, "x86_64-linux");
    assert_eq!(main.profile_path, "/nix/var/nix/profiles/nix-deploy");
    assert_eq!(main.profile.name(), "k8s-cluster-main-profile");
    assert_eq!(
        main.profile_installable,
        format!("{}#deploy.nodes.k8s-cluster-main.profile", nix.flake)
    );
    assert!(main.k3s.extra_flags.is_empty());
    assert_eq!(main.nix.install, InstallMethod::Closure);
    assert_eq!(
        main.nix.package.as_ref().map(|p| p.name()),
        Some("nix-2.8.0")
    );
    assert_eq!(
        main.nix.package_installable,
        format!("{}#deploy.nodes.k8s-cluster-main.nix.package", nix.flake)
    );
    let node1 = &inv.nodes["k8s-cluster-node-1"];
    assert_eq!(node1.hostname, "203.0.113.11");
    assert_eq!(node1.role, Role::Agent);
    assert_eq!(node1.profile.name(), "k8s-cluster-node-1-profile");

    assert_eq!(inv.cluster.name, "k8s");
    assert_eq!(inv.cluster.acme_email, "admin@example.com");
    assert!(!inv.cluster.k3s.ha);
    assert_eq!(inv.cluster.ingress.traefik_chart, "39.0.5");
    assert!(inv.cluster.ingress.cert_manager.starts_with("v1."));

    // The profile is the host's package: the same path as packages.<system>.<host>.
    let pkg = nix
        .eval_json("packages.x86_64-linux.k8s-cluster-main.outPath")
        .await
        .expect("eval");
    assert_eq!(pkg.as_str(), Some(main.profile.to_absolute().as_str()));
}

#[tokio::test]
async fn profiles_build_in_one_nix_invocation_with_each_hosts_programs() {
    // A wrapper logs each nix invocation, so the test can count them.
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("calls");
    let wrapper = tmp.path().join("nix");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec nix \"$@\"\n",
            log.display()
        ),
    )
    .expect("write wrapper");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .expect("chmod");
    let mut nix = repo_nix();
    nix.program = wrapper.into();

    let inv = Inventory::load(&nix).await.expect("inventory loads");
    let nodes = inv.select(&["all".to_string()]).expect("select");
    std::fs::remove_file(&log).expect("evaluations were logged");
    let built = build_profiles(&nix, &nodes).await.expect("build");

    let calls = std::fs::read_to_string(&log).expect("log");
    assert_eq!(calls.lines().count(), 1, "one nix invocation: {calls}");
    assert!(calls.contains(" build --no-link --json "), "{calls}");

    // k3s with its links, and the fixture's recording systemctl.
    let k3s = ["crictl", "ctr", "k3s", "kubectl", "systemctl"];
    let mut main: Vec<&str> = vec!["cowsay", "htop"];
    main.extend(k3s);
    main.sort();
    let mut node1: Vec<&str> = vec!["dinosay", "htop"];
    node1.extend(k3s);
    node1.sort();
    for (node, programs) in [("k8s-cluster-main", main), ("k8s-cluster-node-1", node1)] {
        let path = &built[node];
        assert_eq!(path, &inv.nodes[node].profile);
        let bin = Path::new(&path.to_absolute()).join("bin");
        assert_eq!(names_in(&bin), programs, "{node}");
    }
    // The programs run (the profile's bin/ holds symlinks into the packages).
    let main_bin = Path::new(&built["k8s-cluster-main"].to_absolute()).join("bin");
    let out = std::process::Command::new(main_bin.join("kubectl"))
        .arg("version")
        .env("K3S_FIXTURE_LOG", tmp.path().join("k3s.log"))
        .output()
        .expect("kubectl runs");
    assert!(out.status.success());
    let k3s_log = std::fs::read_to_string(tmp.path().join("k3s.log")).expect("k3s log");
    let calls: Vec<&str> = k3s_log
        .lines()
        .filter(|l| l.starts_with("call\t"))
        .collect();
    assert_eq!(calls, ["call\tkubectl\tversion"]);
    let node1_bin = Path::new(&built["k8s-cluster-node-1"].to_absolute()).join("bin");
    let out = std::process::Command::new(node1_bin.join("dinosay"))
        .arg("hello")
        .output()
        .expect("dinosay runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("< hello >"), "{said}");
}

#[tokio::test]
async fn a_version_bump_in_the_fixture_changes_only_that_hosts_profile() {
    let before = Inventory::load(&repo_nix()).await.expect("inventory");
    let fixture = copy_fixture_nixpkgs();
    edit(
        &fixture.path().join("versions.json"),
        "\"cowsay\": \"3.8.4\"",
        "\"cowsay\": \"3.8.5\"",
    );
    let nix = repo_nix_with(fixture.path());
    let after = Inventory::load(&nix).await.expect("inventory");
    assert_ne!(
        before.nodes["k8s-cluster-main"].profile,
        after.nodes["k8s-cluster-main"].profile
    );
    assert_eq!(
        before.nodes["k8s-cluster-node-1"].profile,
        after.nodes["k8s-cluster-node-1"].profile
    );
    let main = after.select(&["k8s-cluster-main".into()]).expect("select");
    let built = build_profiles(&nix, &main).await.expect("build");
    let cowsay =
        std::fs::read_link(Path::new(&built["k8s-cluster-main"].to_absolute()).join("bin/cowsay"))
            .expect("cowsay link");
    assert!(
        cowsay.to_string_lossy().contains("-cowsay-3.8.5/"),
        "{cowsay:?}"
    );
}

/// The new worker's name has a dot, so its profile's installable needs a
/// quoted attribute name.
#[tokio::test]
async fn adding_a_worker_is_a_hosts_file_and_an_entry() {
    let dir = copy_flake();
    let host = dir.path().join("hosts/k8s.node-2.nix");
    std::fs::copy(dir.path().join("hosts/k8s-cluster-node-1.nix"), &host).expect("copy host");
    edit(&host, "k8s-cluster-node-1-profile", "k8s-node-2-profile");
    edit(
        &dir.path().join("flake.nix"),
        "k8s-cluster-node-1 = {",
        "\"k8s.node-2\" = { hostname = \"203.0.113.12\"; role = \"agent\"; sshPort = 2222; };\n          k8s-cluster-node-1 = {",
    );
    let nix = nix_with(dir.path(), &fixture_nixpkgs());
    let inv = Inventory::load(&nix).await.expect("inventory loads");
    let node2 = &inv.nodes["k8s.node-2"];
    assert_eq!((node2.role, node2.ssh_port), (Role::Agent, 2222));
    assert_eq!(node2.profile.name(), "k8s-node-2-profile");
    assert!(node2
        .profile_installable
        .ends_with("#deploy.nodes.\"k8s.node-2\".profile"));
    let built = build_profiles(&nix, &inv.select(&["k8s.node-2".into()]).expect("select"))
        .await
        .expect("build");
    let bin = Path::new(&built["k8s.node-2"].to_absolute()).join("bin");
    assert!(names_in(&bin).contains(&"dinosay".to_string()));
}

#[tokio::test]
async fn a_node_without_a_hosts_file_gets_nixs_error_with_our_hint() {
    let err = load_edited(&[(
        "k8s-cluster-node-1 = {",
        "k8s-cluster-node-7 = { hostname = \"203.0.113.17\"; role = \"agent\"; };\n          k8s-cluster-node-1 = {",
    )])
    .await
    .unwrap_err();
    let stderr = match &err {
        InventoryError::Nix(e) => e.nix_stderr().unwrap_or_default().to_string(),
        other => panic!("expected a Nix error, got {other:?}"),
    };
    assert!(
        stderr.contains(
            "deploy.nodes.k8s-cluster-node-7: no profile: add hosts/k8s-cluster-node-7.nix"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_field_of_the_wrong_type_names_the_node_and_field() {
    let err = load_edited(&[("\"203.0.113.10\"", "[ \"203.0.113.10\" ]")])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `k8s-cluster-main`: hostname must be a string, not [\"203.0.113.10\"]"
    );
}

#[tokio::test]
async fn select_takes_all_or_names_and_rejects_unknown_ones() {
    let inv = Inventory::load(&repo_nix()).await.expect("inventory");
    let names = |v: Vec<&nix_deploy::inventory::NodeConfig>| {
        v.iter().map(|n| n.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(inv.select(&["all".into()]).expect("all")).len(), 2);
    let picked = inv
        .select(&[
            "k8s-cluster-node-1".into(),
            "k8s-cluster-main".into(),
            "k8s-cluster-node-1".into(),
        ])
        .expect("select");
    assert_eq!(names(picked), ["k8s-cluster-node-1", "k8s-cluster-main"]);
    let err = inv.select(&["k8s-cluster-node-9".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no node named `k8s-cluster-node-9` (known: k8s-cluster-main, k8s-cluster-node-1)"
    );
}

#[tokio::test]
async fn an_unknown_role_names_the_node_and_the_allowed_roles() {
    let err = load_edited(&[("role = \"agent\";", "role = \"worker\";")])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `k8s-cluster-node-1`: role \"worker\" is unknown: use one of \"server\", \"agent\""
    );
}

#[tokio::test]
async fn a_node_sets_its_nix_install_method_and_an_unknown_one_is_refused() {
    let apt = "role = \"agent\"; nix.install = \"apt\";";
    let inv = load_edited(&[("role = \"agent\";", apt)]).await.unwrap();
    let node1 = &inv.nodes["k8s-cluster-node-1"];
    assert_eq!(node1.nix.install, InstallMethod::Apt);
    assert!(node1.nix.package.is_some(), "the default package stays");
    let brew = "role = \"agent\"; nix.install = \"brew\";";
    let err = load_edited(&[("role = \"agent\";", brew)])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `k8s-cluster-node-1`: nix.install \"brew\" is unknown: use one of \"closure\", \"apt\""
    );
}

#[tokio::test]
async fn a_missing_or_empty_hostname_names_the_node() {
    let err = load_edited(&[("hostname = \"203.0.113.11\";", "")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InventoryError::Field { node, field: "hostname", .. } if node == "k8s-cluster-node-1"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "node `k8s-cluster-node-1`: hostname is missing: set the node's address"
    );
    let err = load_edited(&[("\"203.0.113.10\"", "\" \"")])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `k8s-cluster-main`: hostname is empty: set the node's address"
    );
}

#[tokio::test]
async fn a_cluster_without_a_server_is_refused() {
    let err = load_edited(&[("role = \"server\";", "role = \"agent\";")])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no node has role = \"server\" (nodes: k8s-cluster-main, k8s-cluster-node-1): the cluster needs one"
    );
}

#[tokio::test]
async fn two_servers_need_the_ha_setting() {
    let two = ("role = \"agent\";", "role = \"server\";");
    let err = load_edited(&[two]).await.unwrap_err();
    assert!(
        matches!(err, InventoryError::SeveralServers { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("cluster.k3s.ha = true"), "{err}");
    let inv = load_edited(&[two, ("name = \"k8s\";", "name = \"k8s\"; k3s.ha = true;")])
        .await
        .expect("HA cluster loads");
    assert!(inv.cluster.k3s.ha);
}

#[tokio::test]
async fn a_bad_port_names_the_node_and_field() {
    let err = load_edited(&[(
        "hostname = \"203.0.113.11\";",
        "hostname = \"203.0.113.11\"; sshPort = 70000;",
    )])
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `k8s-cluster-node-1`: sshPort 70000 is not a port (1 to 65535)"
    );
}

#[tokio::test]
async fn a_flake_that_fails_to_evaluate_gives_nixs_message() {
    let err = load_edited(&[("role = \"agent\";", "role = throw \"broken on purpose\";")])
        .await
        .unwrap_err();
    let InventoryError::Nix(nix_err) = &err else {
        panic!("expected a Nix error, got {err:?}")
    };
    let stderr = nix_err.nix_stderr().expect("Nix ran and failed");
    assert!(stderr.contains("broken on purpose"), "{stderr}");
    let shown = err.to_string();
    assert!(
        shown.contains("nix --extra-experimental-features 'nix-command flakes' eval --json path:"),
        "{shown}"
    );
    assert!(shown.contains("error: broken on purpose"), "{shown}");
    assert!(!shown.contains('\x1b'), "display strips colours: {shown:?}");

    let err = load_edited(&[("outputs = {", "outputs = {{")])
        .await
        .unwrap_err();
    let stderr = match &err {
        InventoryError::Nix(e) => e.nix_stderr().unwrap_or_default().to_string(),
        other => panic!("expected a Nix error, got {other:?}"),
    };
    assert!(stderr.contains("syntax error"), "{stderr}");
}

#[tokio::test]
async fn nix_missing_from_path_gives_the_install_hint() {
    let mut nix = repo_nix();
    nix.env.push(("PATH".into(), "/nonexistent".into()));
    let err = Inventory::load(&nix).await.unwrap_err();
    assert!(
        matches!(err, InventoryError::Nix(NixError::NotInstalled { .. })),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "nix not found on PATH: install Nix (apt-get install nix-bin)"
    );
    let err = NixCli { ..nix }.build(&["x".into()]).await.unwrap_err();
    assert!(matches!(err, NixError::NotInstalled { .. }), "{err:?}");
}

#[tokio::test]
async fn a_cluster_cache_lands_in_every_nodes_nix_conf_settings() {
    let inv = load_edited(&[(
        "acmeEmail = \"admin@example.com\";",
        "acmeEmail = \"admin@example.com\";\n          cache = { url = \"s3://c?endpoint=10.0.0.1:9000&scheme=http\"; \
         substituter = \"http://10.0.0.1:9000/c\"; \
         publicKeys = [ \"cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\" ]; };",
    )])
    .await
    .expect("inventory");
    let cache = inv.cluster.cache.as_ref().expect("cache");
    assert_eq!(cache.url, "s3://c?endpoint=10.0.0.1:9000&scheme=http");
    assert_eq!(
        cache.compression,
        nix_deploy::inventory::CacheCompression::Zstd
    );
    for node in inv.nodes.values() {
        let s = &node.nix.settings;
        assert_eq!(s["extra-substituters"], "http://10.0.0.1:9000/c");
        assert_eq!(
            s["extra-trusted-public-keys"],
            "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
        );
        assert_eq!(s["extra-experimental-features"], "nix-command flakes");
    }
    // A URL that would add a line to nix.conf is refused, naming the field.
    let err = load_edited(&[(
        "acmeEmail = \"admin@example.com\";",
        "acmeEmail = \"admin@example.com\";\n          cache = { url = \"http://c/\\nrequire-sigs = false\"; };",
    )])
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with("deploy.cluster.cache: url "),
        "{err}"
    );
    // Credentials in a URL would land in the Nix store.
    let err = load_edited(&[(
        "acmeEmail = \"admin@example.com\";",
        "acmeEmail = \"admin@example.com\";\n          cache = { url = \"https://ci:hunter2@cache.example.com\"; };",
    )])
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("AWS_ACCESS_KEY_ID") && !err.to_string().contains("hunter2"),
        "{err}"
    );
}

#[tokio::test]
async fn a_peer_address_and_port_are_read_and_checked() {
    let inv = load_edited(&[(
        "hostname = \"203.0.113.11\";",
        "hostname = \"203.0.113.11\"; sshPort = 2222; peerAddress = \"10.0.0.11\"; peerPort = 22;",
    )])
    .await
    .expect("inventory");
    let node = &inv.nodes["k8s-cluster-node-1"];
    assert_eq!(
        (node.peer_address.as_deref(), node.ssh_port, node.peer_port),
        (Some("10.0.0.11"), 2222, Some(22))
    );
    let main = &inv.nodes["k8s-cluster-main"];
    assert_eq!((&main.peer_address, main.peer_port), (&None, None));
    let err = load_edited(&[(
        "hostname = \"203.0.113.11\";",
        "hostname = \"203.0.113.11\"; peerPort = 70000;",
    )])
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("node `k8s-cluster-node-1`: peerPort 70000 is not a port"),
        "{err}"
    );
    let err = load_edited(&[(
        "hostname = \"203.0.113.11\";",
        "hostname = \"203.0.113.11\"; peerAddress = \"-oProxyCommand=x\";",
    )])
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("node `k8s-cluster-node-1`: peerAddress "),
        "{err}"
    );
}
