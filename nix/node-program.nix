# A program the deployer pushes into nodes' stores (a crate of this
# workspace with one binary), built from pkgsStatic where nixpkgs has it:
# one static binary, no glibc to push along with it. packages.nix makes
# two: nix-deploy-receive (the node side of zstd copies) and
# nix-deploy-relay (the node side of fan-out).
{ pname, crate, description }:
{ lib, rustPlatform }:
rustPlatform.buildRustPackage {
  inherit pname;
  version = "0.1.0";
  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "-p" crate ];
  # Its tests run in scripts/test.
  doCheck = false;
  meta = {
    inherit description;
    mainProgram = pname;
  };
}
