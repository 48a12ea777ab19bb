# The control plane's profile: the shared tools, cowsay, k3s (run as server) and
# the pinned k3s install script.
{ pkgs, common, nix-deploy }:
pkgs.buildEnv {
  name = "k8s-cluster-main-profile";
  paths = common ++ [
    pkgs.cowsay
    pkgs.k3s
    nix-deploy.k3s-install-script
  ];
}
