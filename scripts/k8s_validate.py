#!/usr/bin/env python3
"""Validates the manifests of `dvlab k8s render` offline.

Built-in objects go through `kubernetes-validate --strict` (the official schemas of the given
Kubernetes versions; strict rejects unknown fields). Chaos Mesh objects - in the rendered files
and inside the `dvlab-faults` ConfigMap the fault timer reads - are validated against the
OpenAPI v3 schema of their CustomResourceDefinition (read from the shared CRD file), made
strict the way the API server's field validation is: an unknown field is an error (the API
server would prune it silently), except where the schema preserves unknown fields.

usage: k8s_validate.py --crds CRDS.yaml [--k8s-version 1.30.0 ...] DIR...
Prints one line per object; exit 1 on any failure.
"""
import argparse
import copy
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

CHAOS_GROUP = "chaos-mesh.org/"


def strict(schema):
    """A copy of an OpenAPI v3 schema where objects with `properties` reject other fields."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
                and "additionalProperties" not in node
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


def crd_schemas(path):
    out = {}
    for doc in yaml.safe_load_all(pathlib.Path(path).read_text()):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        kind = doc["spec"]["names"]["kind"]
        group = doc["spec"]["group"]
        for v in doc["spec"]["versions"]:
            schema = strict(v["schema"]["openAPIV3Schema"])
            out[(f"{group}/{v['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return out


def name_of(obj):
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"


def self_test(crds, versions):
    """Both checks must reject a misspelt field and a wrong enum value, or they prove nothing."""
    bad_chaos = {
        "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
        "metadata": {"name": "x"},
        "spec": {"action": "delay", "mode": "all", "selector": {"namespaces": ["n"]},
                 "delay": {"latncy": "10ms"}},
    }
    wrong_enum = {
        "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "PodChaos",
        "metadata": {"name": "x"},
        "spec": {"action": "container-freeze", "mode": "all", "selector": {}},
    }
    for obj in (bad_chaos, wrong_enum):
        if not list(crds[(obj["apiVersion"], obj["kind"])].iter_errors(obj)):
            sys.exit(f"self-test: the CRD check accepted {obj}")
    bad_builtin = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                   "spec": {"clusterIp": "None"}}
    for ver in versions:
        try:
            kubernetes_validate.validate(bad_builtin, ver, strict=True)
        except kubernetes_validate.ValidationError:
            continue
        sys.exit(f"self-test: kubernetes-validate {ver} accepted {bad_builtin}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crds", required=True)
    ap.add_argument("--k8s-version", action="append", default=[])
    ap.add_argument("dirs", nargs="+")
    args = ap.parse_args()
    versions = args.k8s_version or ["1.30.0"]
    crds = crd_schemas(args.crds)
    self_test(crds, versions)
    failures = 0
    counts = {"builtin": 0, "chaos": 0}

    def check_chaos(obj, where):
        nonlocal failures
        v = crds.get((obj.get("apiVersion"), obj.get("kind")))
        if v is None:
            print(f"FAIL {where}: {name_of(obj)}: no CRD for {obj.get('apiVersion')} {obj.get('kind')}")
            failures += 1
            return
        errors = sorted(v.iter_errors(obj), key=lambda e: list(e.path))
        for e in errors:
            path = ".".join(str(p) for p in e.path)
            print(f"FAIL {where}: {name_of(obj)}: {path}: {e.message}")
        failures += bool(errors)
        counts["chaos"] += 1

    for d in args.dirs:
        files = sorted(pathlib.Path(d).glob("*.yaml"))
        if not files:
            print(f"FAIL {d}: no manifests")
            failures += 1
        for f in files:
            for obj in yaml.safe_load_all(f.read_text()):
                if not obj:
                    continue
                where = f"{f}"
                if str(obj.get("apiVersion", "")).startswith(CHAOS_GROUP):
                    check_chaos(obj, where)
                    continue
                for ver in versions:
                    try:
                        kubernetes_validate.validate(obj, ver, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        path = ".".join(str(p) for p in e.path)
                        print(f"FAIL {where}: {name_of(obj)} (Kubernetes {ver}): {path}: {e.message}")
                        failures += 1
                    except Exception as e:  # unknown kind/version, schema errors
                        print(f"FAIL {where}: {name_of(obj)} (Kubernetes {ver}): {e}")
                        failures += 1
                counts["builtin"] += 1
                if obj.get("kind") == "ConfigMap":
                    for key, text in (obj.get("data") or {}).items():
                        inner = yaml.safe_load(text)
                        if isinstance(inner, dict) and str(inner.get("apiVersion", "")).startswith(CHAOS_GROUP):
                            check_chaos(inner, f"{where} ConfigMap {obj['metadata']['name']} {key}")
    print(
        f"{'FAIL' if failures else 'ok'}: {counts['builtin']} built-in objects "
        f"(Kubernetes {', '.join(versions)}, strict), {counts['chaos']} Chaos Mesh objects "
        f"(CRD schemas, strict), {failures} failure(s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
