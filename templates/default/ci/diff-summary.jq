# `deploy --diff --json` as Markdown: per node what its profile gains,
# loses and changes, and what would cross the network.
def bytes: if . == null then "nothing" elif . >= 1048576 then "\(. / 1048576 | floor) MiB" elif . >= 1024 then "\(. / 1024 | floor) KiB" else "\(.) B" end;
"## What this change would deploy", "",
(.nodes[] |
  "### \(.name)", "",
  if .error then "Cannot preview: \(.error)"
  elif .diff.empty then "No changes."
  else
    (.diff.added[] | "- added \(.name) \(.version)"),
    (.diff.removed[] | "- removed \(.name) \(.version)"),
    (.diff.changed[] | "- \(.name) \(.oldVersion) → \(.newVersion)"),
    "- closure \(.diff.oldClosureBytes | bytes) → \(.diff.newClosureBytes | bytes); to send: \(.diff.transferPaths) paths, \(.diff.transferBytes | bytes)"
  end,
  "")
