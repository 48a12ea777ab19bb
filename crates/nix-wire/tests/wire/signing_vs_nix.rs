//! Our signatures against real Nix (every peer): keys written by
//! `nix-store --generate-binary-cache-key` parse, a closure we sign is
//! accepted by a daemon that requires signatures by that key and passes
//! `nix store verify --sigs-needed 1`, a key it does not trust is refused,
//! and Nix's own `nix store sign` produces exactly our signature.

use std::path::{Path, PathBuf};

use nix_wire::daemon::{connect_local, spawn_stdio, ClientConfig, DaemonClient, PathInfo};
use nix_wire::signing::{PublicKey, SecretKey};
use nix_wire::{nar, StorePath};
use test_support::{fixture_closure, peers, run, Peer, TempStore};

fn keys(peer: &Peer, dir: &Path, name: &str) -> (SecretKey, PublicKey, String, PathBuf) {
    let (sk, pk) = (
        dir.join(format!("{name}.sk")),
        dir.join(format!("{name}.pk")),
    );
    run(peer
        .command("nix-store")
        .args(["--generate-binary-cache-key", name])
        .args([&sk, &pk]));
    let pk_text = std::fs::read_to_string(&pk).unwrap();
    let secret = SecretKey::parse(&std::fs::read_to_string(&sk).unwrap()).unwrap();
    let public = PublicKey::parse(&pk_text).unwrap();
    assert_eq!(secret.public_key(), public, "{}", peer.name);
    assert_eq!(public.to_string(), pk_text.trim());
    (secret, public, pk_text.trim().to_owned(), sk)
}

async fn local_infos(root: &str) -> Vec<PathInfo> {
    let mut c = DaemonClient::connect(connect_local().await.unwrap(), ClientConfig::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    for p in run(std::process::Command::new("nix-store").args(["-qR", root])).lines() {
        let p = StorePath::parse(p).unwrap();
        out.push(c.query_path_info(&p).await.unwrap().unwrap());
    }
    nix_wire::daemon::topo_sort(out).unwrap()
}

/// Uploads `infos` into `store` through `nix-daemon --stdio` run by `peer`
/// trusting only `trusted`, asking it to check signatures.
async fn upload(peer: &Peer, store: &TempStore, trusted: &str, infos: &[PathInfo]) -> String {
    let mut cmd = store.daemon_command(peer);
    cmd.args(["--option", "require-sigs", "true"]).args([
        "--option",
        "trusted-public-keys",
        trusted,
    ]);
    let mut c = DaemonClient::connect(spawn_stdio(cmd).unwrap(), ClientConfig::default())
        .await
        .unwrap();
    let items: Vec<_> = infos
        .iter()
        .map(|i| {
            let (r, _) = nar::encode_async(PathBuf::from(i.path.to_absolute()), 65536);
            (i.clone(), r)
        })
        .collect();
    match c.add_multiple_to_store(items, false, false).await {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn nix_accepts_our_signatures_and_signs_identically() {
    let fx = fixture_closure(2, "signing-vectors", 1);
    let dir = tempfile::Builder::new()
        .prefix("nix-deploy-keys-")
        .tempdir_in("/tmp")
        .unwrap();
    for peer in peers() {
        let (sk, _pk, pk_text, sk_file) = keys(&peer, dir.path(), &format!("{}-1", peer.name));
        let (_, _, other_pk, _) = keys(&peer, dir.path(), "other-1");
        let mut infos = local_infos(&fx.root).await;
        for i in &mut infos {
            let sig = sk.sign(i).unwrap();
            i.signatures.insert(sig);
        }

        let refused = TempStore::new();
        let err = upload(&peer, &refused, &other_pk, &infos).await;
        assert!(
            err.contains("lacks a valid signature")
                || err.contains("lacks a signature by a trusted key"),
            "{}: {err}",
            peer.name
        );

        let store = TempStore::new();
        let err = upload(&peer, &store, &pk_text, &infos).await;
        assert_eq!(err, "", "{}", peer.name);
        store.verify(&peer);
        run(peer
            .command("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "store",
                "verify",
            ])
            .arg("--store")
            .arg(store.root())
            .args([
                "--sigs-needed",
                "1",
                "--trusted-public-keys",
                &pk_text,
                "-r",
                &fx.root,
            ]));

        // Nix's own signature of each path equals ours.
        run(peer
            .command("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "store",
                "sign",
            ])
            .arg("--store")
            .arg(store.root())
            .arg("--key-file")
            .arg(&sk_file)
            .args(["-r", &fx.root]));
        let json = run(peer
            .command("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "path-info",
                "--json",
            ])
            .arg("--store")
            .arg(store.root())
            .args(["-r", &fx.root]));
        for i in &infos {
            let ours = sk.sign(i).unwrap();
            assert_eq!(
                json.matches(&format!("\"{ours}\"")).count(),
                1,
                "{}: {ours} in {json}",
                peer.name
            );
        }
    }
}
