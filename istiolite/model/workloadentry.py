"""networking.istio.io WorkloadEntry: a workload that is not a pod (a VM, a bare process),
selected into ServiceEntries by its labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.validation import (
    ValidationError,
    require_mapping,
    require_port,
    require_str,
    require_string_map,
)


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    meta: ObjectMeta
    address: str
    ports: dict[str, int]
    labels: dict[str, str]
    locality: str
    weight: int
    service_account: str

    @property
    def namespace(self) -> str:
        return self.meta.namespace


def parse_workload_entry(raw: dict[str, Any]) -> WorkloadEntry:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    address = require_str(spec.get("address"), "spec.address", required=True)
    ports = require_mapping(spec.get("ports"), "spec.ports")
    for name, number in ports.items():
        require_port(number, f"spec.ports.{name}")
    weight = spec.get("weight", 1) or 1
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise ValidationError("spec.weight", f"must be a positive integer, got {weight!r}")
    return WorkloadEntry(
        meta=meta,
        address=address,
        ports={str(k): int(v) for k, v in ports.items()},
        labels=require_string_map(spec.get("labels"), "spec.labels"),
        locality=require_str(spec.get("locality"), "spec.locality"),
        weight=weight,
        service_account=require_str(spec.get("serviceAccount"), "spec.serviceAccount"),
    )
