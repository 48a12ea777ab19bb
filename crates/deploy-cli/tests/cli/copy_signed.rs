//! `deploy copy --sign` as an unprivileged SSH user: the deployer key is
//! generated under $HOME on first use, `deploy public-key` prints what the
//! node must trust, and with it in the node's nix.conf the signed copy
//! succeeds where the unsigned one is refused with our explanation.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use test_cluster::{Cluster, ClusterSpec, Node, NodeKind};
use test_support::fixture_closure;

fn deploy(home: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
    c.env("HOME", home).env_remove("XDG_CONFIG_HOME").args(args);
    c
}

fn copy(home: &std::path::Path, cluster: &Cluster, node: &Node, root: &str, sign: bool) -> Output {
    let to = format!("deploy@{}", node.name());
    let mut c = deploy(home, &["copy", "--to", &to, "--no-agent", "--json"]);
    c.arg("--ssh-config").arg(cluster.ssh_config());
    if sign {
        c.arg("--sign");
    }
    c.arg(root).output().unwrap()
}

#[test]
fn an_unprivileged_user_copies_with_sign_once_the_node_trusts_the_key() {
    let fx = fixture_closure(4, "cli-signed", 1);
    let home = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let node = &cluster.nodes()[0];

    let out = deploy(home.path(), &["public-key"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let key_file = home.path().join(".config/nix-deploy/signing-key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read_to_string(&key_file).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&public));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(secret.trim()));

    node.run_ok(&format!(
        "echo 'extra-trusted-public-keys = {public}' >> /etc/nix/nix.conf"
    ))
    .unwrap();
    node.start_nix_daemon().unwrap();

    let out = copy(home.path(), &cluster, node, &fx.root, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("trusted-public-keys") && err.contains("--sign"),
        "{err}"
    );

    let out = copy(home.path(), &cluster, node, &fx.root, true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(secret.trim()));
    let sigs = node
        .run_ok(&format!(
            "nix --extra-experimental-features nix-command path-info --sigs {}",
            fx.root
        ))
        .unwrap();
    assert!(sigs.contains(public.split(':').next().unwrap()), "{sigs}");
}
