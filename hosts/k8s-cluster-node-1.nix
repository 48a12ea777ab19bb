# A worker's profile: the shared tools, the dinosay helper, k3s (run as agent)
# and the pinned k3s install script.
{ pkgs, common, nix-deploy }:
pkgs.buildEnv {
  name = "k8s-cluster-node-1-profile";
  paths = common ++ [
    (pkgs.callPackage ../nix/dinosay.nix { })
    pkgs.k3s
    nix-deploy.k3s-install-script
  ];
}
