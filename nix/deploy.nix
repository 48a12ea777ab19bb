# The `deploy` command, built from this workspace with the pinned toolchain.
{ lib, rustPlatform }:
rustPlatform.buildRustPackage {
  pname = "deploy";
  version = "0.1.0";
  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "deploy-cli" ];
  # The test suite needs real Nix daemons and root; it runs in scripts/test.
  doCheck = false;
  meta = {
    description = "Nix-native deployer for small k3s clusters on plain Debian VPS nodes";
    mainProgram = "deploy";
  };
}
