{
  description = "Nix-native deployer for small k3s clusters on plain Debian VPS nodes";

  # One input, so tests can replace it: `--override-input nixpkgs path:tests/fixtures/nixpkgs`.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      hostProfiles = pkgs:
        let common = import ./hosts/common.nix { inherit pkgs; };
        in {
          k8s-cluster-main = import ./hosts/k8s-cluster-main.nix { inherit pkgs common; };
          k8s-cluster-node-1 = import ./hosts/k8s-cluster-node-1.nix { inherit pkgs common; };
        };
    in
    {
      packages = forAllSystems (pkgs: hostProfiles pkgs // rec {
        deploy = pkgs.callPackage ./nix/deploy.nix { };
        default = deploy;
      });

      apps = forAllSystems (pkgs: rec {
        deploy = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.deploy}/bin/deploy";
        };
        default = deploy;
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
