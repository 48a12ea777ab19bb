# The deploy inventory's shape and defaults, as plain data for
# `nix eval --json .#deploy` (the deploy library reads it; names follow
# deploy-rs where they overlap). Nothing here is checked: the library
# validates the inventory and names the node and field of any error.
{
  # Settings shared by the whole cluster.
  mkCluster =
    { name ? "k8s"
    , acmeEmail ? "admin@example.com"
    , ingress ? { }
    , k3s ? { }
    }: {
      inherit name acmeEmail;
      ingress = {
        # Traefik Helm chart (https://traefik.github.io/charts); its values
        # syntax (`ports.web.redirectTo.port`) holds for chart 25 to 33.
        traefikChart = "25.0.0";
        # cert-manager Helm chart (https://charts.jetstack.io); the 1.13 line
        # of the original note is end of life and predates the k3s 1.35 of
        # nixpkgs, the 1.20 line supports Kubernetes 1.32 to 1.35.
        certManager = "v1.20.0";
      } // ingress;
      k3s = {
        # More than one server needs an HA datastore (embedded etcd).
        ha = false;
      } // k3s;
    };

  # One node. `profile` is the host's package profile (a buildEnv); the
  # profile lands at `profilePath` on the node. `nix` says how `deploy
  # prepare` installs Nix on a node without it: `install` is "closure"
  # (push `package`, a Nix package, from the deployer's store: no network
  # needed on the node) or "apt" (Debian's nix-bin).
  mkNode =
    { hostname ? null
    , role ? null
    , profile
    , system ? "x86_64-linux"
    , sshUser ? "root"
    , sshPort ? 22
    , profilePath ? "/nix/var/nix/profiles/nix-deploy"
    , k3s ? { }
    , nix ? { }
    }: {
      inherit hostname sshUser sshPort role system profile profilePath;
      k3s = { extraFlags = [ ]; } // k3s;
      nix = { install = "closure"; package = null; } // nix;
    };

  # The whole `deploy` output: `nodes` maps node names to mkNode arguments
  # without `profile`, which defaults to the package of the same name
  # (`packages.<system>.<node>`, built from `hosts/<node>.nix`).
  # `nixPackage system` is the Nix a node of that system gets installed
  # (`nix.package`, unless the node sets it).
  mkDeploy = { packages, nixPackage ? (system: null), cluster ? { }, nodes }:
    let inventory = import ./inventory.nix; in
    {
      cluster = inventory.mkCluster cluster;
      nodes = builtins.mapAttrs
        (name: node:
          let system = node.system or "x86_64-linux"; in
          inventory.mkNode ({
            profile = packages.${system}.${name} or (throw
              "deploy.nodes.${name}: no profile: add hosts/${name}.nix (it becomes packages.${system}.${name}) or set `profile`");
          } // node // {
            nix = { package = nixPackage system; } // (node.nix or { });
          }))
        nodes;
    };
}
