# A worker: the shared tools, k3s (run as agent) and the install script.
# Another worker = a copy of this file under its name, plus a node in
# flake.nix.
{ pkgs, common, nix-deploy }:
pkgs.buildEnv {
  name = "agent-1-profile";
  paths = common ++ [
    pkgs.k3s
    nix-deploy.k3s-install-script
  ];
}
