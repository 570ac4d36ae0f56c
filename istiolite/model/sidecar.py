"""networking.istio.io Sidecar: which services a workload's proxy may reach, and what happens to
traffic for anything else (outboundTrafficPolicy)."""

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

ROOT_NAMESPACE = "istio-system"  # a Sidecar here without a selector is the mesh-wide default


@dataclass(frozen=True, slots=True)
class Sidecar:
    meta: ObjectMeta
    workload_selector: dict[str, str]
    # (namespace part, host part) of every egress host, e.g. (".", "*") or ("*", "*.example.com").
    egress_hosts: tuple[tuple[str, str], ...]
    outbound_mode: str  # ALLOW_ANY | REGISTRY_ONLY | "" (the mesh default, ALLOW_ANY)

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    def selects(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.workload_selector.items())

    def allows(self, service_namespace: str, hostname: str) -> bool:
        """Whether egress lists the service (`ns/host`: ns `*`, `.` (own), `~` (none))."""
        if not self.egress_hosts:
            return True
        for ns, host in self.egress_hosts:
            if ns == "~":
                continue
            if ns not in ("*", ".", service_namespace) or (
                ns == "." and service_namespace != self.namespace
            ):
                continue
            if (
                host == "*"
                or host == hostname
                or (host.startswith("*.") and hostname.endswith(host[1:]))
            ):
                return True
        return False


def parse_sidecar(raw: dict[str, Any]) -> Sidecar:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    selector = require_mapping(spec.get("workloadSelector"), "spec.workloadSelector")
    labels = require_string_map(selector.get("labels"), "spec.workloadSelector.labels")
    hosts: list[tuple[str, str]] = []
    for i, listener in enumerate(require_list(spec.get("egress"), "spec.egress")):
        e = require_mapping(listener, f"spec.egress[{i}]")
        entries = require_list(e.get("hosts"), f"spec.egress[{i}].hosts")
        if not entries:
            raise ValidationError(f"spec.egress[{i}].hosts", "at least one host is required")
        for j, entry in enumerate(entries):
            where = f"spec.egress[{i}].hosts[{j}]"
            text = require_str(entry, where, required=True)
            ns, sep, host = text.partition("/")
            if not sep or not ns or not host:
                raise ValidationError(where, f"{text!r} is not <namespace>/<host>")
            hosts.append((ns, host))
    policy = require_mapping(spec.get("outboundTrafficPolicy"), "spec.outboundTrafficPolicy")
    mode = require_str(policy.get("mode"), "spec.outboundTrafficPolicy.mode")
    if mode not in ("", "ALLOW_ANY", "REGISTRY_ONLY"):
        raise ValidationError(
            "spec.outboundTrafficPolicy.mode", "must be ALLOW_ANY or REGISTRY_ONLY"
        )
    return Sidecar(
        meta=meta, workload_selector=labels, egress_hosts=tuple(hosts), outbound_mode=mode
    )
