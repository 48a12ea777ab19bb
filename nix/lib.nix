# `lib` of this flake, for other flakes (system-independent).
#
# `mkFlake` gives a cluster repository all the outputs it needs from its
# nixpkgs, its hosts/ directory and its inventory:
#
#   outputs = { self, nixpkgs, nix-deploy }: nix-deploy.lib.mkFlake {
#     inherit nixpkgs;
#     hosts = ./hosts;
#     cluster = { acmeEmail = "ops@example.com"; };
#     nodes.server = { hostname = "203.0.113.20"; role = "server"; };
#   };
#
# packages.<system>.<host> (one profile per hosts/<host>.nix), .deploy and
# .default (the `deploy` command, built with the user's nixpkgs),
# apps.<system>.deploy (`nix run .#deploy -- all`), checks (every profile
# and deploy) and `deploy` (the inventory `deploy` reads).
let
  inventory = import ./inventory.nix;
in
rec {
  inherit (inventory) mkDeploy mkCluster mkNode;

  # This flake's packages for a package set (see packages.nix).
  packagesFor = import ./packages.nix;

  # The host profiles of a hosts/ directory (see hosts.nix).
  hostProfiles = { pkgs, hosts }:
    import ./hosts.nix {
      inherit pkgs;
      inherit (pkgs) lib;
      dir = hosts;
      tools = packagesFor pkgs;
    };

  mkFlake =
    { nixpkgs
    , hosts
    , nodes
    , cluster ? { }
    , systems ? [ "x86_64-linux" "aarch64-linux" ]
      # The Nix `deploy prepare` installs on nodes without it.
    , nixPackage ? (system: nixpkgs.legacyPackages.${system}.nix or null)
    }:
    let
      lib = nixpkgs.lib;
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      packages = forAllSystems (pkgs:
        let tools = packagesFor pkgs; in
        hostProfiles { inherit pkgs hosts; } // {
          inherit (tools) deploy nix-deploy-receive nix-deploy-relay;
          default = tools.deploy;
        });
      k3sVersion = (nixpkgs.legacyPackages.${builtins.head systems}.k3s or { }).version or null;
    in
    {
      inherit packages;
      apps = forAllSystems (pkgs: rec {
        deploy = {
          type = "app";
          program = "${packages.${pkgs.stdenv.hostPlatform.system}.deploy}/bin/deploy";
          meta.description = "Deploy the cluster: build the host profiles, copy them to the nodes, switch, configure k3s";
        };
        default = deploy;
      });
      # `nix flake check` builds every host profile and the deploy package.
      checks = forAllSystems (pkgs: builtins.removeAttrs packages.${pkgs.stdenv.hostPlatform.system} [ "default" ]);
      # The inventory, read as `nix eval --json .#deploy.nodes` and
      # `.#deploy.cluster`. The cluster's k3s version defaults to nixpkgs'.
      deploy = mkDeploy {
        inherit packages nixPackage nodes;
        cluster = cluster // {
          k3s = { version = k3sVersion; } // (cluster.k3s or { });
        };
      };
    };
}
