# The control plane: the shared tools, k3s (run as server) and k3s's pinned
# install script, which the deploy runs on the node.
{ pkgs, common, nix-deploy }:
pkgs.buildEnv {
  name = "server-1-profile";
  paths = common ++ [
    pkgs.k3s
    nix-deploy.k3s-install-script
  ];
}
