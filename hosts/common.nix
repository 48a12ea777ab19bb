# Packages every node gets: a plain list, shared by the host profiles.
{ pkgs }:
[
  pkgs.htop
]
