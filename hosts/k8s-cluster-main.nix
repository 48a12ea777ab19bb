# The control plane's profile: the shared tools, cowsay and k3s (run as server).
{ pkgs, common }:
pkgs.buildEnv {
  name = "k8s-cluster-main-profile";
  paths = common ++ [
    pkgs.cowsay
    pkgs.k3s
  ];
}
