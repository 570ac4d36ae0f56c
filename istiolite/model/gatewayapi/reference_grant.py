"""gateway.networking.k8s.io ReferenceGrant (v1beta1, v1alpha2): which kinds of which namespaces
may refer to objects in the grant's namespace (a route to a Service, a Gateway to a Secret)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from istiolite.model.gatewayapi.common import ApiMeta, limited, namespace_name, parse_api_meta
from istiolite.model.meta import ObjectMeta
from istiolite.model.validation import ValidationError, require_mapping, require_str


@dataclass(frozen=True, slots=True)
class GrantFrom:
    group: str
    kind: str
    namespace: str


@dataclass(frozen=True, slots=True)
class GrantTo:
    group: str
    kind: str
    name: str = ""  # "" = every object of the kind


@dataclass(frozen=True, slots=True)
class ReferenceGrant:
    meta: ObjectMeta
    api: ApiMeta
    from_: tuple[GrantFrom, ...]
    to: tuple[GrantTo, ...]

    def allows(self, source: GrantFrom, group: str, kind: str, name: str) -> bool:
        return source in self.from_ and any(
            _group(t.group) == _group(group) and t.kind == kind and t.name in ("", name)
            for t in self.to
        )


def _group(group: str) -> str:
    return "" if group == "core" else group


def parse_reference_grant(raw: dict[str, Any]) -> ReferenceGrant:
    meta, api = parse_api_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    froms = []
    for i, item in enumerate(limited(spec.get("from"), "spec.from", 16)):
        f = require_mapping(item, f"spec.from[{i}]")
        froms.append(
            GrantFrom(
                group=_group(require_str(f.get("group"), f"spec.from[{i}].group")),
                kind=require_str(f.get("kind"), f"spec.from[{i}].kind", required=True),
                namespace=namespace_name(f.get("namespace"), f"spec.from[{i}].namespace")
                or _required(f"spec.from[{i}].namespace"),
            )
        )
    tos = []
    for i, item in enumerate(limited(spec.get("to"), "spec.to", 16)):
        t = require_mapping(item, f"spec.to[{i}]")
        tos.append(
            GrantTo(
                group=_group(require_str(t.get("group"), f"spec.to[{i}].group")),
                kind=require_str(t.get("kind"), f"spec.to[{i}].kind", required=True),
                name=require_str(t.get("name"), f"spec.to[{i}].name"),
            )
        )
    if not froms:
        raise ValidationError("spec.from", "needs at least one entry")
    if not tos:
        raise ValidationError("spec.to", "needs at least one entry")
    return ReferenceGrant(meta=meta, api=api, from_=tuple(froms), to=tuple(tos))


def _required(where: str) -> str:
    raise ValidationError(where, "is required")
