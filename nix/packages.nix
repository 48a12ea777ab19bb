# The packages this flake adds to a package set: the `deploy` command, the
# node-side receiver of zstd copies, and k3s's pinned install script (which
# host profiles carry as share/k3s/install.sh). Used by the flake's own
# packages, by `overlays.default` and by `lib.mkFlake`.
pkgs: rec {
  # Static where nixpkgs can (pkgsStatic), so nodes get one binary.
  nix-deploy-receive = (pkgs.pkgsStatic or pkgs).callPackage ./receiver.nix { };
  deploy = pkgs.callPackage ./deploy.nix { receiver = nix-deploy-receive; };
  k3s-install-script = pkgs.callPackage ./k3s-install.nix { };
}
