//! The flake's outputs, evaluated from the repository's real flake.nix with
//! nixpkgs replaced by the fixture package set; the lock file as Nix reads
//! it offline; and the same profiles built by Nix 2.26.

use std::path::Path;

use crate::flake_support::*;
use nix_deploy::inventory::{build_profiles, Inventory};
use nix_deploy::nix_cli::NixCli;

const SYSTEMS: [&str; 2] = ["x86_64-linux", "aarch64-linux"];

#[tokio::test]
async fn flake_check_passes_and_outputs_cover_both_systems() {
    let nix = repo_nix();
    nix.run(&["flake", "check", &nix.flake])
        .await
        .expect("nix flake check");

    let show = nix
        .run(&["flake", "show", "--json", &nix.flake])
        .await
        .expect("nix flake show");
    let show: serde_json::Value = serde_json::from_str(&show).expect("JSON");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    for system in SYSTEMS {
        assert_eq!(
            keys(&show["packages"][system]),
            [
                "default",
                "deploy",
                "k8s-cluster-main",
                "k8s-cluster-node-1",
                "nix-deploy-receive",
                "nix-deploy-relay"
            ],
            "{system}"
        );
        assert_eq!(keys(&show["apps"][system]), ["default", "deploy"]);
        assert_eq!(
            keys(&show["checks"][system]),
            [
                "deploy",
                "k8s-cluster-main",
                "k8s-cluster-node-1",
                "nix-deploy-receive",
                "nix-deploy-relay"
            ]
        );
        assert_eq!(keys(&show["devShells"][system]), ["default"]);
        assert_eq!(show["formatter"][system]["name"], "nixpkgs-fmt-1.3.0");
        // Each system's profile is built for that system.
        let drv_system = nix
            .eval_json(&format!("packages.{system}.k8s-cluster-node-1.system"))
            .await
            .expect("eval");
        assert_eq!(drv_system, system);
        // deploy is built knowing the receiver and the relay of its own
        // system.
        for (var, package) in [
            ("NIX_DEPLOY_RECEIVER", "nix-deploy-receive"),
            ("NIX_DEPLOY_RELAY", "nix-deploy-relay"),
        ] {
            let baked = nix
                .eval_json(&format!("packages.{system}.deploy.{var}"))
                .await
                .expect("eval");
            let built = nix
                .eval_json(&format!("packages.{system}.{package}.outPath"))
                .await
                .expect("eval");
            assert_eq!(baked, built, "{system}: {var}");
        }
    }

    // The default app runs the default package's bin/deploy.
    let program = nix
        .eval_json("apps.x86_64-linux.default.program")
        .await
        .expect("eval");
    let built = nix
        .build(&[nix.installable("packages.x86_64-linux.default")])
        .await
        .expect("build deploy");
    assert_eq!(built.len(), 1);
    let out = built[0].outputs["out"].to_absolute();
    assert_eq!(program, format!("{out}/bin/deploy"));
    assert!(Path::new(&format!("{out}/bin/deploy")).exists());
    assert_eq!(
        built[0].drv_path.as_ref().map(|d| d.name().to_string()),
        Some("deploy-0.1.0.drv".to_string())
    );
}

#[tokio::test]
async fn nix_accepts_the_lock_file_offline() {
    let repo = repo();
    let nix = NixCli::new(repo.display().to_string());
    let meta = nix
        .run(&[
            "flake",
            "metadata",
            "--offline",
            "--no-update-lock-file",
            "--json",
            &nix.flake,
        ])
        .await
        .expect("nix flake metadata");
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("JSON");
    let nodes = &meta["locks"]["nodes"];
    assert_eq!(
        nodes["nixpkgs"]["locked"]["rev"],
        "445d861c6d31b4af0c79d8d4be2331f762a361d7"
    );
    assert_eq!(nodes["nixpkgs"]["original"]["ref"], "nixos-26.05");
    assert_eq!(keys_of(&nodes["root"]["inputs"]), ["nixpkgs"]);
}

fn keys_of(v: &serde_json::Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Nix 2.26 (in the Debian 13 chroot of `scripts/setup-test-machine`) reads
/// the inventory and prints `nix build --json` in the shape we parse, with
/// the same store paths as Nix 2.8.
#[tokio::test]
async fn nix_2_26_loads_the_inventory_and_builds_the_same_profiles() {
    let root = Path::new("/var/cache/nix-deploy/trixie-nix");
    if !root.join("usr/bin/nix").exists() {
        let msg = "Nix 2.26 chroot missing: run scripts/setup-test-machine";
        assert!(!test_support::in_ci(), "{msg}");
        eprintln!("skipping: {msg}");
        return;
    }
    // The chroot sees the host's /tmp, so the flake and fixture go there;
    // builds need /dev (pseudo-terminals), which tests/peers/nix-2.26 lacks.
    let flake = copy_flake();
    let fixture = copy_fixture_nixpkgs();
    let mut nix = nix_with(flake.path(), fixture.path());
    nix.program = "unshare".into();
    nix.program_args = [
        "-m",
        "sh",
        "-c",
        r#"mount --bind /tmp "$0/tmp" && mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@""#,
    ]
    .iter()
    .map(Into::into)
    .chain([root.as_os_str().to_owned(), "nix".into()])
    .collect();
    let bare = NixCli {
        extra_args: Vec::new(),
        ..nix.clone()
    };
    let version = bare.run(&["--version"]).await.expect("nix --version");
    assert!(version.contains("2.26"), "{version}");

    let inv = Inventory::load(&nix)
        .await
        .expect("inventory with Nix 2.26");
    let nodes = inv.select(&["all".into()]).expect("select");
    let built = build_profiles(&nix, &nodes)
        .await
        .expect("build with Nix 2.26");

    let host = nix_with(flake.path(), fixture.path());
    let host_inv = Inventory::load(&host)
        .await
        .expect("inventory with Nix 2.8");
    for (name, node) in &host_inv.nodes {
        assert_eq!(
            &built[name], &node.profile,
            "{name}: same path in both Nix versions"
        );
    }
}
