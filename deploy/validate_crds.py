#!/usr/bin/env python3
"""Validates custom resources against the real CRDs, as a Kubernetes API server would receive them.

usage: validate_crds.py CRD_DIR FILE...   (FILEs: YAML or JSON, one or more objects each)

For every object of a custom kind (API group with a dot, not *.k8s.io) it finds each CRD in CRD_DIR that
defines the kind (for example Crossplane v1.17.0 and v2 HEAD), and per CRD:
  1. emulates the API server's pruning: nulls of fields that are not `nullable` are dropped (noted), and
     fields the structural schema does not know are dropped too -- reported as FAILURES, since the API server
     would accept the object and silently lose them;
  2. validates what remains against the version's openAPIV3Schema with jsonschema (types, enums, required,
     patterns, int-or-string; CEL rules in x-kubernetes-validations are not evaluated, only counted).
A custom kind without any CRD here, or a version the CRD does not serve, is a failure. Exit 0 when all pass.
"""

import copy
import json
import os
import sys

import jsonschema
import yaml


def load_documents(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        doc = json.loads(text)
        return doc.get("items", [doc]) if doc.get("kind", "").endswith("List") else [doc]
    return [d for d in yaml.safe_load_all(text) if d]


def load_crds(crd_dir):
    """(group, kind) -> [(file name, {version: schema}, {version: served})]."""
    crds = {}
    for name in sorted(os.listdir(crd_dir)):
        if not name.endswith((".yaml", ".yml")):
            continue
        for doc in load_documents(os.path.join(crd_dir, name)):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            versions = {v["name"]: v for v in spec["versions"]}
            key = (spec["group"], spec["names"]["kind"])
            crds.setdefault(key, []).append((name, versions))
    return crds


def is_custom(api_version):
    group = api_version.rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def child_schema(schema, key):
    """The schema of `key` inside an object schema, or None when a structural schema prunes it."""
    props = schema.get("properties")
    if props is not None and key in props:
        return props[key]
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        return additional
    if additional is True or schema.get("x-kubernetes-preserve-unknown-fields"):
        return {"x-kubernetes-preserve-unknown-fields": True}
    return None


def prune(value, schema, path, unknown, nulls):
    """Drops what the API server would drop, in place, recording where."""
    if isinstance(value, dict):
        for key in list(value):
            sub = child_schema(schema, key)
            where = f"{path}.{key}"
            if sub is None:
                unknown.append(where)
                del value[key]
            elif value[key] is None and not sub.get("nullable"):
                nulls.append(where)
                del value[key]
            else:
                prune(value[key], sub, where, unknown, nulls)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            prune(item, schema["items"], f"{path}[{i}]", unknown, nulls)


def to_json_schema(schema):
    """The OpenAPI v3 subset of a CRD as JSON Schema: `nullable` becomes a null type, int-or-string an anyOf."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_json_schema(v) for k, v in schema.items()}
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in schema:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def count_cel(schema):
    if isinstance(schema, dict):
        return len(schema.get("x-kubernetes-validations", [])) + sum(count_cel(v) for v in schema.values())
    if isinstance(schema, list):
        return sum(count_cel(v) for v in schema)
    return 0


def validate(obj, crd_name, version):
    """The failures of one object against one CRD version, as text lines."""
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # ObjectMeta is validated by the API server itself, not by the CRD's schema.
    schema.setdefault("properties", {})["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    pruned = copy.deepcopy(obj)
    unknown, nulls = [], []
    prune(pruned, schema, "", unknown, nulls)
    failures = [f"unknown field {u[1:]} (the API server would silently drop it)" for u in unknown]
    for n in nulls:
        print(f"    note: null {n[1:]} is pruned by the API server")
    validator = jsonschema.Draft7Validator(to_json_schema(schema))
    for error in sorted(validator.iter_errors(pruned), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path) or "(root)"
        failures.append(f"{where}: {error.message}")
    cel = count_cel(schema)
    if cel:
        print(f"    note: {cel} CEL rules of {crd_name} are not evaluated here")
    return failures


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    crd_dir, files = argv[1], argv[2:]
    crds = load_crds(crd_dir)
    failed = False
    for path in files:
        for obj in load_documents(path):
            api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
            if not is_custom(api_version):
                continue
            group, _, version_name = api_version.rpartition("/")
            label = f"{kind} {obj.get('metadata', {}).get('name', '?')} ({api_version})"
            candidates = crds.get((group, kind), [])
            if not candidates:
                print(f"  FAIL {label}: no CRD for it in {crd_dir}", file=sys.stderr)
                failed = True
            for crd_name, versions in candidates:
                version = versions.get(version_name)
                if version is None or not version.get("served", False):
                    print(f"  FAIL {label}: {crd_name} does not serve {version_name}", file=sys.stderr)
                    failed = True
                    continue
                failures = validate(obj, crd_name, version)
                for failure in failures:
                    print(f"  FAIL {label} against {crd_name}: {failure}", file=sys.stderr)
                failed |= bool(failures)
                if not failures:
                    print(f"  {label}: valid against {crd_name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
