# A worker's profile: the shared tools, the dinosay helper and k3s (run as agent).
{ pkgs, common }:
pkgs.buildEnv {
  name = "k8s-cluster-node-1-profile";
  paths = common ++ [
    (pkgs.callPackage ../nix/dinosay.nix { })
    pkgs.k3s
  ];
}
