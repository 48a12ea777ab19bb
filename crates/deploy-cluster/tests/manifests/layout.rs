//! The workspace's crates depend on each other one way only, as each
//! crate's `lib.rs` says: checked on `cargo metadata`, so a new dependency
//! that breaks the layering fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Each workspace crate and the workspace crates it depends on (normal
/// dependencies; dev-dependencies are the tests' business).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let ours: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|d| ours.contains(*d))
                .map(str::to_owned)
                .collect();
            (p["name"].as_str().expect("name").to_owned(), deps)
        })
        .collect()
}

#[test]
fn crates_depend_one_way() {
    let deps = dependencies();
    let of = |c: &str| deps.get(c).unwrap_or_else(|| panic!("no crate {c}"));
    assert!(of("deploy-cluster").contains("nix-deploy"));
    assert!(of("deploy-cli").contains("deploy-cluster"));
    assert!(of("nix-deploy").contains("deploy-remote"));
    let ours = |c: &str| of(c).iter().cloned().collect::<Vec<_>>();
    for (krate, must_not) in [
        (
            "nix-wire",
            &[
                "deploy-ssh",
                "deploy-remote",
                "nix-deploy",
                "deploy-cluster",
                "deploy-cli",
            ][..],
        ),
        (
            "deploy-ssh",
            &[
                "nix-wire",
                "deploy-remote",
                "nix-deploy",
                "deploy-cluster",
                "deploy-cli",
            ],
        ),
        (
            "deploy-remote",
            &["nix-wire", "nix-deploy", "deploy-cluster", "deploy-cli"],
        ),
        ("nix-deploy", &["deploy-cluster", "deploy-cli"]),
        ("deploy-cluster", &["deploy-cli"]),
    ] {
        for other in must_not {
            assert!(
                !of(krate).contains(*other),
                "{krate} depends on {other}: {:?}",
                ours(krate)
            );
        }
    }
    let receiver: Vec<_> = ours("deploy-receive");
    assert!(
        receiver.is_empty(),
        "the node's receiver depends on {receiver:?}"
    );
}
