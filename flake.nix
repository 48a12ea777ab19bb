{
  description = "Nix-native deployer for small k3s clusters on plain Debian VPS nodes";

  # One input, so tests can replace it: `--override-input nixpkgs path:tests/fixtures/nixpkgs`.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      inventory = import ./nix/inventory.nix;

      # Every hosts/<host>.nix but common.nix is a host profile, exposed as
      # packages.<system>.<host>.
      hostNames = map (f: lib.removeSuffix ".nix" f)
        (builtins.filter (f: lib.hasSuffix ".nix" f && f != "common.nix")
          (builtins.attrNames (builtins.readDir ./hosts)));
      hostProfiles = pkgs:
        let common = import ./hosts/common.nix { inherit pkgs; };
        in lib.genAttrs hostNames (host: import (./hosts + "/${host}.nix") { inherit pkgs common; });
    in
    {
      packages = forAllSystems (pkgs: hostProfiles pkgs // rec {
        # Static where nixpkgs can (pkgsStatic), so nodes get one binary.
        nix-deploy-receive = (pkgs.pkgsStatic or pkgs).callPackage ./nix/receiver.nix { };
        deploy = pkgs.callPackage ./nix/deploy.nix { receiver = nix-deploy-receive; };
        default = deploy;
      });

      apps = forAllSystems (pkgs: rec {
        deploy = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.deploy}/bin/deploy";
          meta.description = "Deploy the cluster: build the host profiles, copy them to the nodes, switch, configure k3s";
        };
        default = deploy;
      });

      # `nix flake check` builds every host profile and the deploy package.
      checks = forAllSystems (pkgs: builtins.removeAttrs self.packages.${pkgs.stdenv.hostPlatform.system} [ "default" ]);

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.deploy ];
          packages = [ pkgs.cargo pkgs.rustc pkgs.clippy pkgs.rustfmt pkgs.nixpkgs-fmt ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);

      # The inventory: system-independent plain data, read as
      # `nix eval --json .#deploy.nodes` and `.#deploy.cluster` (plain `.#deploy`
      # would find packages.<system>.deploy first).
      # Adding a worker = a hosts/<name>.nix file plus an entry in `nodes`.
      deploy = inventory.mkDeploy {
        packages = self.packages;
        # The Nix `deploy prepare` installs on nodes without it (nix.install = "closure").
        nixPackage = system: nixpkgs.legacyPackages.${system}.nix;
        cluster = {
          name = "k8s";
          acmeEmail = "admin@example.com";
          k3s.version = nixpkgs.legacyPackages.x86_64-linux.k3s.version;
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
    };
}
