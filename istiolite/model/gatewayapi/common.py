"""What the Gateway API kinds share: object metadata beyond `ObjectMeta` (generation, creation
time, uid — for status, precedence and owner references), parentRefs and backendRefs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.validation import (
    ValidationError,
    clip,
    require_list,
    require_mapping,
    require_port,
    require_str,
)

GROUP = "gateway.networking.k8s.io"
# Listener and route hostnames: a DNS name, optionally with one leading `*.` label.
_HOSTNAME = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)
_SECTION = re.compile(r"^[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A route's parentRefs, hostnames, rules, matches: the CRDs' maxItems.
MAX_PARENT_REFS = 32
MAX_HOSTNAMES = 16
MAX_RULES = 16
MAX_MATCHES = 64
MAX_BACKENDS = 16
MAX_FILTERS = 16
MAX_LISTENERS = 64


@dataclass(frozen=True, slots=True)
class ApiMeta:
    """The metadata status and precedence need; files carry none of it (0 / "")."""

    generation: int = 0
    created: str = ""  # RFC 3339; "" sorts first (files have no creation time)
    uid: str = ""


def parse_api_meta(raw: dict[str, Any], *, namespaced: bool) -> tuple[ObjectMeta, ApiMeta]:
    meta = parse_meta(raw, namespaced=namespaced)
    m = require_mapping(raw.get("metadata"), "metadata")
    generation = m.get("generation", 0)
    if isinstance(generation, bool) or not isinstance(generation, int):
        generation = 0
    created = m.get("creationTimestamp")
    uid = m.get("uid")
    return meta, ApiMeta(
        generation=generation,
        created=created if isinstance(created, str) else "",
        uid=uid if isinstance(uid, str) else "",
    )


def hostname(raw: Any, where: str) -> str:
    text = require_str(raw, where, required=True).lower()
    if len(text) > 253 or not _HOSTNAME.match(text):
        raise ValidationError(
            where, f"{clip(text)!r} is not a DNS name (a leading '*.' label is allowed)"
        )
    return text


def hostnames(raw: Any, where: str) -> tuple[str, ...]:
    items = limited(raw, where, MAX_HOSTNAMES)
    return tuple(hostname(h, f"{where}[{i}]") for i, h in enumerate(items))


def limited(raw: Any, where: str, most: int) -> list[Any]:
    items = require_list(raw, where)
    if len(items) > most:
        raise ValidationError(where, f"has {len(items)} items; at most {most} are allowed")
    return items


def namespace_name(raw: Any, where: str) -> str:
    text = require_str(raw, where)
    if text and not _NAMESPACE.match(text):
        raise ValidationError(where, f"{clip(text)!r} is not a namespace name")
    return text


@dataclass(frozen=True, slots=True)
class ParentRef:
    group: str
    kind: str
    namespace: str  # resolved: the route's own when not written
    name: str
    section_name: str = ""
    port: int | None = None

    @property
    def is_gateway(self) -> bool:
        return self.group == GROUP and self.kind == "Gateway"

    @property
    def is_service(self) -> bool:
        return self.group in ("", "core") and self.kind == "Service"

    def as_status(self, route_namespace: str) -> dict[str, Any]:
        """The parentRef as written back in `status.parents[].parentRef`."""
        out: dict[str, Any] = {"group": self.group, "kind": self.kind, "name": self.name}
        if self.namespace != route_namespace:
            out["namespace"] = self.namespace
        if self.section_name:
            out["sectionName"] = self.section_name
        if self.port is not None:
            out["port"] = self.port
        return out


def parent_refs(raw: Any, where: str, namespace: str) -> tuple[ParentRef, ...]:
    out = []
    for i, item in enumerate(limited(raw, where, MAX_PARENT_REFS)):
        at = f"{where}[{i}]"
        p = require_mapping(item, at)
        group = require_str(p.get("group", GROUP), f"{at}.group")
        kind = require_str(p.get("kind"), f"{at}.kind") or "Gateway"
        section = require_str(p.get("sectionName"), f"{at}.sectionName")
        if section and not _SECTION.match(section):
            raise ValidationError(f"{at}.sectionName", f"{clip(section)!r} is not a valid name")
        port = require_port(p["port"], f"{at}.port") if p.get("port") is not None else None
        out.append(
            ParentRef(
                group=group,
                kind=kind,
                namespace=namespace_name(p.get("namespace"), f"{at}.namespace") or namespace,
                name=require_str(p.get("name"), f"{at}.name", required=True),
                section_name=section,
                port=port,
            )
        )
    if len(set(out)) != len(out):
        raise ValidationError(where, "the same parent is referenced twice")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class BackendRef:
    group: str
    kind: str  # Service, or istiod's `Hostname` (group networking.istio.io)
    name: str
    namespace: str  # resolved: the route's own when not written
    port: int | None
    weight: int = 1

    @property
    def is_service(self) -> bool:
        return self.group in ("", "core") and self.kind == "Service"

    @property
    def is_hostname(self) -> bool:
        return self.group == "networking.istio.io" and self.kind == "Hostname"


def backend_ref(raw: Any, where: str, namespace: str, *, weighted: bool = True) -> BackendRef:
    b = require_mapping(raw, where)
    group = require_str(b.get("group"), f"{where}.group")
    kind = require_str(b.get("kind"), f"{where}.kind") or "Service"
    port = require_port(b["port"], f"{where}.port") if b.get("port") is not None else None
    if group in ("", "core") and kind == "Service" and port is None:
        raise ValidationError(f"{where}.port", "is required for a Service backend")
    weight = 1
    if weighted and b.get("weight") is not None:
        weight = b["weight"]
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 1_000_000:
            raise ValidationError(f"{where}.weight", f"must be 0 to 1000000, got {weight!r}")
    return BackendRef(
        group=group,
        kind=kind,
        name=require_str(b.get("name"), f"{where}.name", required=True),
        namespace=namespace_name(b.get("namespace"), f"{where}.namespace") or namespace,
        port=port,
        weight=weight,
    )


def backend_refs(raw: Any, where: str, namespace: str) -> tuple[BackendRef, ...]:
    return tuple(
        backend_ref(b, f"{where}[{i}]", namespace)
        for i, b in enumerate(limited(raw, where, MAX_BACKENDS))
    )
