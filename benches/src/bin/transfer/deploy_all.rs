//! `deploy all` of the benchmark closure: a copy of the repository's flake
//! (nixpkgs replaced by the fixture set) whose inventory keeps only the
//! control plane, whose profile is a derivation referencing the closure's
//! root, deployed with `--goal switch` (copy, lock, watchdog, switch,
//! confirmation; the cluster stages have no k3s to talk to here).

use std::process::Command;

use benches::{deploy_binary, measure, Measured};
use test_cluster::{Cluster, Node};
use test_support::flake::{copy_flake, edit, fixture_nixpkgs, flake_ref, nix_args};

/// The inventory's node whose profile holds the closure.
const NODE: &str = "k8s-cluster-main";

/// A flake deploying `root` as the profile of one node.
pub struct Flake {
    dir: tempfile::TempDir,
}

impl Flake {
    /// Writes the flake for the closure of `root`.
    pub fn new(root: &str) -> Flake {
        let dir = copy_flake();
        let flake = dir.path().join("flake.nix");
        edit(
            &flake,
            "          k8s-cluster-node-1 = {\n            hostname = \"203.0.113.11\";\n            role = \"agent\";\n          };\n",
            "",
        );
        let profile = format!(
            "# The benchmark closure as a profile.\n{{ pkgs, common }}:\n\
             derivation {{\n  name = \"bench-profile\";\n  system = builtins.currentSystem;\n  \
             builder = \"/bin/sh\";\n  closure = builtins.storePath \"{root}\";\n  \
             args = [ \"-c\" \"echo $closure > $out\" ];\n}}\n"
        );
        std::fs::write(dir.path().join("hosts/k8s-cluster-main.nix"), profile)
            .expect("write the profile");
        Flake { dir }
    }

    /// `deploy all --goal switch` to `node`.
    pub fn deploy(
        &self,
        cluster: &Cluster,
        node: &Node,
        receiver: &str,
    ) -> Result<Measured, String> {
        let mut c = Command::new(deploy_binary()?);
        c.arg("all")
            .arg("--flake")
            .arg(flake_ref(self.dir.path()))
            .args(nix_args(&fixture_nixpkgs()))
            // The profile names a store path (builtins.storePath).
            .args(["--option", "pure-eval", "false"])
            .args(["--goal", "switch", "--json", "--no-agent"])
            .arg("--ssh-config")
            .arg(cluster.ssh_config())
            .arg("--target")
            .arg(format!("{NODE}={}", node.name()))
            .args(["--receiver", receiver]);
        measure(&mut c)
    }
}
