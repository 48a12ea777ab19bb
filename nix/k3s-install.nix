# k3s's official install script, pinned: the k3s stages run it on each k3s
# node with INSTALL_K3S_SKIP_DOWNLOAD=true and the profile's k3s, so it only
# writes the systemd unit. It is never fetched at deploy time: it comes to
# the node inside the host's profile, as share/k3s/install.sh.
#
# get.k3s.io serves install.sh from k3s's master branch only, so it is
# pinned by commit. The hash is the one k3s publishes for that commit's
# script in its install.sh.sha256sum.
{ fetchurl, runCommand }:
let
  commit = "019b0afdd830e36f5e4b7a5b237e6a4339e6a6be";
  script = fetchurl {
    name = "k3s-install.sh";
    url = "https://raw.githubusercontent.com/k3s-io/k3s/${commit}/install.sh";
    sha256 = "68ae766b4c4fd2c8032f712cdd346c8f9d1ae60eaeb4736a1155effda44ea23d";
  };
in
runCommand "k3s-install-script-${builtins.substring 0 7 commit}" { inherit script; } ''
  mkdir -p $out/share/k3s
  cp $script $out/share/k3s/install.sh
''
