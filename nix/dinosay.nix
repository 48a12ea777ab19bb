# `dinosay`: a dinosaur says the arguments (or stdin). Not in nixpkgs, so we
# carry this small helper ourselves.
{ writeShellScriptBin }:
writeShellScriptBin "dinosay" ''
  msg="$*"
  [ -n "$msg" ] || msg=$(cat)
  printf ' %s\n< %s >\n %s\n' "$(printf '%s' "$msg" | sed 's/./_/g')" "$msg" "$(printf '%s' "$msg" | sed 's/./-/g')"
  cat <<'DINO'
        \
         \   __
             / _)
    _.----._/ /
   /         /
__/ (  | (  |
/__.-'|_|--|_|
DINO
''
