# The packages this flake adds to a package set: the `deploy` command, the
# node-side receiver of zstd copies and relay of fan-outs, and k3s's pinned
# install script (which
# host profiles carry as share/k3s/install.sh). Used by the flake's own
# packages, by `overlays.default` and by `lib.mkFlake`.
pkgs: rec {
  # Static where nixpkgs can (pkgsStatic), so nodes get one binary.
  nix-deploy-receive = (pkgs.pkgsStatic or pkgs).callPackage ./receiver.nix { };
  nix-deploy-relay = (pkgs.pkgsStatic or pkgs).callPackage ./relay.nix { };
  deploy = pkgs.callPackage ./deploy.nix {
    receiver = nix-deploy-receive;
    relay = nix-deploy-relay;
  };
  k3s-install-script = pkgs.callPackage ./k3s-install.nix { };
}
