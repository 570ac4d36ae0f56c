"""networking.istio.io DestinationRule: the host it applies to and its subsets (by pod labels).

Traffic policies (load balancer, connection pool, outlier detection, TLS) are not translated yet:
they are accepted and not yet applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.validation import (
    ValidationError,
    require_list,
    require_mapping,
    require_str,
    require_string_map,
)
from istiolite.model.virtualservice import validate_host


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class DestinationRule:
    meta: ObjectMeta
    host: str
    subsets: tuple[Subset, ...]
    export_to: tuple[str, ...]

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)


def parse_destination_rule(raw: dict[str, Any]) -> DestinationRule:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    host = validate_host(spec.get("host"), "spec.host")
    subsets: list[Subset] = []
    seen: set[str] = set()
    for i, item in enumerate(require_list(spec.get("subsets"), "spec.subsets")):
        s = require_mapping(item, f"spec.subsets[{i}]")
        name = require_str(s.get("name"), f"spec.subsets[{i}].name", required=True)
        if name in seen:
            raise ValidationError(f"spec.subsets[{i}].name", f"duplicate subset {name!r}")
        seen.add(name)
        labels = require_string_map(s.get("labels"), f"spec.subsets[{i}].labels")
        subsets.append(Subset(name=name, labels=labels))
    export_to = require_list(spec.get("exportTo"), "spec.exportTo")
    return DestinationRule(
        meta=meta, host=host, subsets=tuple(subsets), export_to=tuple(str(e) for e in export_to)
    )
