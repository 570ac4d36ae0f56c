"""A CRD's openAPIV3Schema as the API server applies it, in JSON Schema terms: objects are
closed (a field the schema does not declare is refused, as kubectl's strict field validation
refuses what the server would prune), except under x-kubernetes-preserve-unknown-fields."""

from __future__ import annotations

from typing import Any

import jsonschema


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
        return {}
    out: dict[str, Any] = {}
    if "type" in node:
        out["type"] = node["type"]
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
        out["additionalProperties"] = False
    elif isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    return out


def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    """Where a schema breaks Kubernetes' structural-schema rules this generator could break."""
    problems = []
    exempt = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-int-or-string"
    )
    if not node.get("type") and not exempt:
        problems.append(f"{path or '<root>'}: no type")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties: false is forbidden")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: both properties and additionalProperties")
    for name, child in (node.get("properties") or {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    return problems


def validate(crd: dict[str, Any], version: str, obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when `obj` does not fit the CRD's schema at `version`."""
    served = {v["name"]: v for v in crd["spec"]["versions"]}
    schema = to_json_schema(served[version]["schema"]["openAPIV3Schema"])
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.validate(body, schema)
