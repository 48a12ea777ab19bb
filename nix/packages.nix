# The packages this flake adds to a package set: the `deploy` command, the
# node-side receiver of zstd copies and relay of fan-outs, and k3s's pinned
# install script (which host profiles carry as share/k3s/install.sh). Used
# by the flake's own packages, by `overlays.default` and by `lib.mkFlake`.
pkgs:
let
  # Static where nixpkgs can (pkgsStatic), so nodes get one binary.
  nodeProgram = args: (pkgs.pkgsStatic or pkgs).callPackage (import ./node-program.nix args) { };
in
rec {
  nix-deploy-receive = nodeProgram {
    pname = "nix-deploy-receive";
    crate = "deploy-receive";
    description = "Decompresses a zstd stream from the deployer into the node's nix-daemon --stdio";
  };
  nix-deploy-relay = nodeProgram {
    pname = "nix-deploy-relay";
    crate = "deploy-relay";
    description = "Copies closures from its node's store to another node's nix-daemon, for the deployer's fan-out";
  };
  deploy = pkgs.callPackage ./deploy.nix {
    receiver = nix-deploy-receive;
    relay = nix-deploy-relay;
  };
  k3s-install-script = pkgs.callPackage ./k3s-install.nix { };
}
