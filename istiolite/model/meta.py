"""Object identity shared by every Kubernetes kind istiolite reads."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from istiolite.model.validation import (
    ValidationError,
    require_mapping,
    require_str,
    require_string_map,
)

# RFC 1123 label: what Kubernetes accepts for namespace and Service names.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else f"{self.kind} {self.name}"
        )


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    name: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    resource_version: str = ""
    # (field path, message) for the fields the object sets that istiolite accepts but does not
    # translate (schema.unapplied_fields), filled by kinds.parse_object. Kept here, the one
    # dataclass every kind shares, so the warnings travel with the exact object the store keeps;
    # it takes part in equality, so setting such a field is a change that refreshes them.
    unapplied: tuple[tuple[str, str], ...] = ()


def parse_meta(raw: dict[str, Any], *, namespaced: bool, dns_label: bool = False) -> ObjectMeta:
    meta = require_mapping(raw.get("metadata"), "metadata")
    name = require_str(meta.get("name"), "metadata.name", required=True)
    pattern = _DNS_LABEL if dns_label else _DNS_SUBDOMAIN
    if not pattern.match(name):
        raise ValidationError("metadata.name", f"{name!r} is not a valid DNS name")
    namespace = ""
    if namespaced:
        namespace = require_str(meta.get("namespace"), "metadata.namespace") or "default"
        if not _DNS_LABEL.match(namespace):
            raise ValidationError("metadata.namespace", f"{namespace!r} is not a valid DNS label")
    return ObjectMeta(
        name=name,
        namespace=namespace,
        labels=require_string_map(meta.get("labels"), "metadata.labels"),
        annotations=require_string_map(meta.get("annotations"), "metadata.annotations"),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def describe_raw(raw: Any) -> str:
    """Best-effort 'Kind ns/name' for an object that may not have parsed."""
    if not isinstance(raw, dict):
        return "<not a mapping>"
    kind = raw.get("kind") or "<no kind>"
    metadata = raw.get("metadata")
    meta = metadata if isinstance(metadata, dict) else {}
    name = meta.get("name") or "<no name>"
    namespace = meta.get("namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
