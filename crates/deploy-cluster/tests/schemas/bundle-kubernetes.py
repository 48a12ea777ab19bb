#!/usr/bin/env python3
"""Regenerates kubernetes-1.35.json: the JSON schemas (strict: unknown fields
are errors) of the Kubernetes kinds our manifests and examples/ use, with
only the definitions they reach, from the PyPI package kubernetes-validate
(which bundles the upstream OpenAPI schemas converted to JSON schema).

    pip install kubernetes-validate==1.37.0
    python3 bundle-kubernetes.py > kubernetes-1.35.json
"""
import importlib.metadata
import importlib.util
import json
import os
import sys

VERSION = "v1.35.0-local-strict"
KINDS = {
    "v1/Namespace": "namespace-v1.json",
    "v1/Service": "service-v1.json",
    "apps/v1/Deployment": "deployment-apps-v1.json",
    "networking.k8s.io/v1/Ingress": "ingress-networking-v1.json",
}
# The kinds' files point into _definitions.json, which points into itself.
PREFIXES = ("/api/_definitions.json#/$defs/", "#/$defs/")

package = importlib.util.find_spec("kubernetes_validate").origin
root = os.path.join(os.path.dirname(package),
                    "kubernetes-json-schema", VERSION)
with open(os.path.join(root, "_definitions.json")) as f:
    definitions = json.load(f)["$defs"]


def rewrite(node, found):
    """Points $refs into our own $defs and collects the names reached."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            prefix = next((p for p in PREFIXES if key == "$ref"
                           and value.startswith(p)), None)
            if prefix:
                name = value[len(prefix):]
                found.add(name)
                out[key] = "#/$defs/" + name
            elif key != "description":
                out[key] = rewrite(value, found)
        return out
    if isinstance(node, list):
        return [rewrite(item, found) for item in node]
    return node


kinds, defs, todo = {}, {}, set()
for kind, file in KINDS.items():
    with open(os.path.join(root, file)) as f:
        schema = json.load(f)
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    kinds[kind] = rewrite(schema, todo)
while todo:
    name = todo.pop()
    if name not in defs:
        defs[name] = rewrite(definitions[name], todo)

json.dump({
    "source": "PyPI kubernetes-validate %s, %s (descriptions dropped)"
              % (importlib.metadata.version("kubernetes-validate"), VERSION),
    "kinds": kinds,
    "$defs": dict(sorted(defs.items())),
}, sys.stdout, indent=1, sort_keys=False)
sys.stdout.write("\n")
