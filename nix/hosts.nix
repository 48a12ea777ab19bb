# Host profiles from a hosts/ directory: every <host>.nix but common.nix
# becomes a profile named <host>. Each file is a function taking what it
# names of: `pkgs`, `common` (what common.nix returns, if there is one: a
# list of packages every host gets) and `nix-deploy` (this flake's
# packages for `pkgs`, e.g. `nix-deploy.k3s-install-script`).
{ lib, dir, pkgs, tools }:
let
  call = path: args:
    let f = import path; in
    f (builtins.intersectAttrs (builtins.functionArgs f) args);
  files = builtins.attrNames (builtins.readDir dir);
  names = map (lib.removeSuffix ".nix")
    (builtins.filter (f: lib.hasSuffix ".nix" f && f != "common.nix") files);
  base = { inherit pkgs; nix-deploy = tools; };
  common = if builtins.elem "common.nix" files then call (dir + "/common.nix") base else [ ];
in
lib.genAttrs names (host: call (dir + "/${host}.nix") (base // { inherit common; }))
