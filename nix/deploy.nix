# The `deploy` command, built from this workspace with the pinned toolchain.
# `receiver` and `relay` are the nix-deploy-receive and nix-deploy-relay
# packages for this system: their store paths are baked into the binary
# (NIX_DEPLOY_RECEIVER, NIX_DEPLOY_RELAY, read at compile time), which also
# makes them part of deploy's closure, so `nix run .#deploy` can always
# push them to nodes, for zstd copies and fan-out.
{ lib, rustPlatform, receiver, relay }:
rustPlatform.buildRustPackage {
  pname = "deploy";
  version = "0.1.0";
  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "deploy-cli" ];
  NIX_DEPLOY_RECEIVER = "${receiver}";
  NIX_DEPLOY_RELAY = "${relay}";
  # The test suite needs real Nix daemons and root; it runs in scripts/test.
  doCheck = false;
  meta = {
    description = "Nix-native deployer for small k3s clusters on plain Debian VPS nodes";
    mainProgram = "deploy";
  };
}
