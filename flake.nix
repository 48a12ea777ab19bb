{
  description = "Nix-native deployer for small k3s clusters on plain Debian VPS nodes";

  # One input, so tests can replace it: `--override-input nixpkgs path:tests/fixtures/nixpkgs`.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      nixDeployLib = import ./nix/lib.nix;

      # This repository's own cluster, made as a user's flake makes theirs
      # (templates/default): packages.<system>.<host> from hosts/*.nix,
      # packages.<system>.deploy, apps, checks and the `deploy` inventory.
      # Adding a worker = a hosts/<name>.nix file plus an entry in `nodes`.
      cluster = nixDeployLib.mkFlake {
        inherit nixpkgs systems;
        hosts = ./hosts;
        cluster = {
          name = "k8s";
          acmeEmail = "admin@example.com";
        };
        nodes = {
          # The addresses are documentation placeholders (RFC 5737): set your nodes' own.
          k8s-cluster-main = {
            hostname = "203.0.113.10";
            role = "server";
          };
          k8s-cluster-node-1 = {
            hostname = "203.0.113.11";
            role = "agent";
          };
        };
      };
    in
    {
      # Named one by one (not `cluster // ...`), so that `lib`, `overlays`
      # and `templates` evaluate without nixpkgs.
      inherit (cluster) packages apps checks deploy;

      # For other flakes: `lib.mkFlake` (a cluster repository's outputs),
      # `lib.mkDeploy` (the inventory alone), `lib.hostProfiles`,
      # `lib.packagesFor`. System-independent.
      lib = nixDeployLib;

      # `deploy`, `nix-deploy-receive`, `nix-deploy-relay` and `k3s-install-script` added to a
      # package set.
      overlays.default = final: prev: nixDeployLib.packagesFor final;

      # `nix flake init -t <this flake>`: a cluster repository to start from.
      templates.default = {
        path = ./templates/default;
        description = "A k3s cluster deployed with nix-deploy: hosts/, inventory, CI/CD workflows";
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.deploy ];
          packages = [ pkgs.cargo pkgs.rustc pkgs.clippy pkgs.rustfmt pkgs.nixpkgs-fmt ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
