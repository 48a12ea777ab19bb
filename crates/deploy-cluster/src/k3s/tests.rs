//! The k3s stage's plans and dry-run actions, without nodes.

use super::*;

fn node(name: &str, role: Role) -> (K3sNode, Target) {
    let k3s = K3sNode {
        name: name.into(),
        role,
        addresses: vec![format!("{name}.example.org")],
        profile_path: "/p".into(),
        extra_flags: Vec::new(),
    };
    (k3s, Target::new(format!("{name}.example.org")))
}

fn install_line(stage: &K3sStage, name: &str) -> String {
    stage
        .describe(name)
        .iter()
        .map(ToString::to_string)
        .find(|a| a.contains("install.sh"))
        .and_then(|a| a.lines().next().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn an_ha_cluster_starts_etcd_on_the_first_server_and_joins_the_others_to_it() {
    let nodes = vec![
        node("s2", Role::Server),
        node("s1", Role::Server),
        node("a", Role::Agent),
    ];
    let all = ["s1", "s2", "a"].map(String::from);
    let stage = K3sStage::new(
        nodes,
        true,
        &all,
        SshOptions::default(),
        K3sTimeouts::default(),
    );
    let s1 = install_line(&stage, "s1");
    assert!(
        s1.contains(" server --node-name s1 ") && s1.ends_with(" --cluster-init"),
        "{s1}"
    );
    assert!(!s1.contains("K3S_URL"), "{s1}");
    let s2 = install_line(&stage, "s2");
    assert!(
        s2.contains(" K3S_URL=https://s1.example.org:6443 K3S_TOKEN_FILE="),
        "{s2}"
    );
    assert!(
        s2.contains(" server --node-name s2 ") && !s2.contains("--cluster-init"),
        "{s2}"
    );
    let a = install_line(&stage, "a");
    assert!(
        a.contains(" K3S_URL=https://s1.example.org:6443 ") && a.contains(" agent --node-name a"),
        "{a}"
    );
}

#[test]
fn nodes_outside_the_inventory_get_nothing() {
    let stage = K3sStage::new(
        vec![node("s1", Role::Server)],
        false,
        &[],
        SshOptions::default(),
        K3sTimeouts::default(),
    );
    assert!(stage.describe("other").is_empty());
}
