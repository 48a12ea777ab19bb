{
  description = "A k3s cluster on Debian VPS nodes, deployed with nix-deploy";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    # Replace with where you get nix-deploy from.
    nix-deploy.url = "github:nix-deploy/nix-deploy";
    nix-deploy.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, nix-deploy }:
    nix-deploy.lib.mkFlake {
      inherit nixpkgs;
      # One package profile per hosts/<node>.nix (common.nix is shared).
      hosts = ./hosts;
      cluster = {
        name = "my-cluster";
        # Let's Encrypt registers the certificates' account with this address.
        acmeEmail = "ops@example.com";
        # Workloads for k3s's auto-deploy directory on the servers.
        manifests."hello.yaml" = ./manifests/hello.yaml;
      };
      nodes = {
        # Your nodes' addresses (these are RFC 5737 placeholders).
        server-1 = {
          hostname = "203.0.113.20";
          role = "server";
        };
        agent-1 = {
          hostname = "203.0.113.21";
          role = "agent";
        };
      };
    };
}
