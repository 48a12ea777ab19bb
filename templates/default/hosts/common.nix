# Packages every node gets.
{ pkgs }:
[
  pkgs.htop
]
