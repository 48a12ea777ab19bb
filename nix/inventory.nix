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
    , manifests ? { }
    , cache ? null
    }: {
      inherit name acmeEmail;
      # A binary cache the deploy pushes to first and the nodes substitute
      # from (README, "A binary cache"): `url` is where the deployer writes
      # (http://, https:// or s3://bucket?region=…&endpoint=…; credentials
      # come from the deployer's environment, never from here),
      # `substituter` where the nodes read (default: `url`), `publicKeys`
      # the keys of others who sign paths there (the deployer's own key is
      # always trusted), `compression` "zstd" (Nix >= 2.4) or "none".
      cache = if cache == null then null else {
        substituter = cache.url;
        publicKeys = [ ];
        compression = "zstd";
      } // cache;
      # Workload manifests for k3s's auto-deploy directory on the servers:
      # file name -> a path, or a string of YAML (made a file here).
      manifests = builtins.mapAttrs
        (file: m: if builtins.isString m then builtins.toFile file m else m)
        manifests;
      ingress = {
        # Traefik Helm chart (https://traefik.github.io/charts). Not the
        # original note's 25.0.0: that ships Traefik v2.10.5, while the
        # k3s 1.35 of nixpkgs bundles Traefik v3 itself; 39.0.5 (Traefik
        # v3.6) is the chart k3s bundled in March 2026 (k3s PR #13805), so
        # it is tested with this Kubernetes line, and the newest major whose
        # redirect values nix-deploy writes (chart 40 moved them). 25.0.0
        # still renders (the redirect syntax is picked per chart version).
        traefikChart = "39.0.5";
        # cert-manager Helm chart (https://charts.jetstack.io); the 1.13 line
        # of the original note is end of life and predates the k3s 1.35 of
        # nixpkgs, the 1.20 line supports Kubernetes 1.32 to 1.35.
        certManager = "v1.20.0";
      } // ingress;
      k3s = {
        # More than one server needs an HA datastore (embedded etcd).
        ha = false;
        # The k3s version the nodes run (the flake passes its nixpkgs'
        # k3s.version): the ingress charts are checked against its
        # Kubernetes minor.
        version = null;
      } // k3s;
    };

  # One node. `profile` is the host's package profile (a buildEnv); the
  # profile lands at `profilePath` on the node. `nix` says how `deploy
  # prepare` installs Nix on a node without it: `install` is "closure"
  # (push `package`, a Nix package, from the deployer's store: no network
  # needed on the node) or "apt" (Debian's nix-bin). `settings` go into
  # our block of the node's /etc/nix/nix.conf (values: strings, or lists
  # joined by spaces); the user's other lines stay as they are.
  mkNode =
    { hostname ? null
      # The address the other nodes reach this one at (e.g. on the
      # datacenter's private network), for fan-out; default `hostname`.
    , peerAddress ? null
      # The SSH port the other nodes reach it at; default `sshPort` (set
      # it when the deployer goes through a port forward).
    , peerPort ? null
    , role ? null
    , profile
    , system ? "x86_64-linux"
    , sshUser ? "root"
    , sshPort ? 22
    , profilePath ? "/nix/var/nix/profiles/nix-deploy"
    , k3s ? { }
    , nix ? { }
    }: {
      inherit hostname peerAddress peerPort sshUser sshPort role system profile profilePath;
      k3s = { extraFlags = [ ]; } // k3s;
      nix = {
        install = "closure";
        package = null;
      } // nix // {
        settings = builtins.mapAttrs
          (_: v: if builtins.isList v then builtins.concatStringsSep " " v else toString v)
          ({
            # `nix` and flakes on the node, added to what the node enables.
            extra-experimental-features = [ "nix-command" "flakes" ];
          } // (nix.settings or { }));
      };
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
