# The `deploy` command, built from this workspace with the pinned toolchain.
# `receiver` is the nix-deploy-receive package for this system: its store
# path is baked into the binary (NIX_DEPLOY_RECEIVER, read at compile
# time), which also makes it part of deploy's closure, so `nix run
# .#deploy` can always push it to nodes for zstd copies.
{ lib, rustPlatform, receiver }:
rustPlatform.buildRustPackage {
  pname = "deploy";
  version = "0.1.0";
  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "deploy-cli" ];
  NIX_DEPLOY_RECEIVER = "${receiver}";
  # The test suite needs real Nix daemons and root; it runs in scripts/test.
  doCheck = false;
  meta = {
    description = "Nix-native deployer for small k3s clusters on plain Debian VPS nodes";
    mainProgram = "deploy";
  };
}
