# `nix-deploy-relay` (crates/deploy-relay): the node side of fan-out. The
# deployer pushes it into the store of each node that feeds others, so the
# flake builds it from pkgsStatic where nixpkgs has it: one static binary,
# no glibc to push along with it.
{ lib, rustPlatform }:
rustPlatform.buildRustPackage {
  pname = "nix-deploy-relay";
  version = "0.1.0";
  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "deploy-relay" ];
  # Its tests run in scripts/test.
  doCheck = false;
  meta = {
    description = "Copies closures from its node's store to another node's nix-daemon, for the deployer's fan-out";
    mainProgram = "nix-deploy-relay";
  };
}
