# `nix-deploy-receive` (crates/deploy-receive): the node side of zstd
# copies. The deployer pushes it into each node's store before the first
# compressed upload, so the flake builds it from pkgsStatic where nixpkgs
# has it: one static binary, no glibc to push along with it.
{ lib, rustPlatform }:
rustPlatform.buildRustPackage {
  pname = "nix-deploy-receive";
  version = "0.1.0";
  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" "deploy-receive" ];
  # Its tests run in scripts/test.
  doCheck = false;
  meta = {
    description = "Decompresses a zstd stream from the deployer into the node's nix-daemon --stdio";
    mainProgram = "nix-deploy-receive";
  };
}
