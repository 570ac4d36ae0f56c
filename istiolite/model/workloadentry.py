"""networking.istio.io WorkloadEntry: a workload that is not a pod (a VM, a bare process).

As in istiod, an entry's endpoints join the ServiceEntries whose `workloadSelector` picks it and
the Kubernetes Services whose `selector` picks it, in its own namespace.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.validation import (
    ValidationError,
    require_list,
    require_mapping,
    require_port,
    require_str,
    require_string_map,
    require_uint32,
)

UNIX_PREFIX = "unix://"
# istiod: with this annotation (set by WorkloadGroup health checks) an entry counts only while
# its status carries the condition Healthy=True; without the annotation it is always healthy.
HEALTH_CHECKS_ANNOTATION = "proxy.istio.io/health-checks-enabled"
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # DNS-1123 label
_FQDN_LABEL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$")


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    meta: ObjectMeta
    address: str
    ports: dict[str, int]  # port name -> port on the workload
    labels: dict[str, str]  # spec.labels merged with metadata.labels (metadata wins), as istiod
    locality: str
    weight: int
    service_account: str
    network: str = ""
    healthy: bool = True

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def is_ip(self) -> bool:
        """Only IP entries can join Kubernetes Services or STATIC ServiceEntries (istiod calls
        hostname and Unix socket entries "DNS ServiceEntry only")."""
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            return False
        return True


def _valid_fqdn(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(name) <= 255 and all(_FQDN_LABEL.match(label) for label in labels)


def validate_workload_address(address: str, ports: dict[str, Any], where: str) -> None:
    """istiod's validateWorkloadEntry for the address: an IP, an FQDN, or `unix://<abs path>`
    (or an abstract `unix://@name`) without ports."""
    if address.startswith(UNIX_PREFIX):
        path = address[len(UNIX_PREFIX) :]
        if not path.startswith("@") and (not path.startswith("/") or path.endswith("/")):
            raise ValidationError(where, f"{address!r}: a Unix socket must be an absolute path")
        if ports:
            raise ValidationError(where, f"Unix endpoint {address!r} must not include ports")
        return
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not _valid_fqdn(address):
            message = f"{address!r} is not an IP address or a DNS name"
            raise ValidationError(where, message) from None


def parse_ports(raw: Any, where: str) -> dict[str, int]:
    """A `ports` map: DNS-label names to port numbers."""
    ports = require_mapping(raw, where)
    for name, number in ports.items():
        if not isinstance(name, str) or not _PORT_NAME.match(name):
            raise ValidationError(f"{where}.{name}", f"{name!r} is not a valid port name")
        require_port(number, f"{where}.{name}")
    return {str(k): int(v) for k, v in ports.items()}


def parse_weight(raw: Any, where: str) -> int:
    """A load-balancing weight: unset or 0 means 1, as istiod."""
    # Envoy's load_balancing_weight is a uint32 (Istio's field too).
    return require_uint32(raw if raw is not None else 1, where) or 1


def _healthy(meta: ObjectMeta, raw: dict[str, Any]) -> bool:
    if meta.annotations.get(HEALTH_CHECKS_ANNOTATION, "").lower() not in ("true", "1", "t"):
        return True
    status = require_mapping(raw.get("status"), "status")
    for condition in require_list(status.get("conditions"), "status.conditions"):
        if isinstance(condition, dict) and condition.get("type") == "Healthy":
            return str(condition.get("status", "")).lower() == "true"
    return False  # istiod: not proven healthy yet


def parse_workload_entry(raw: dict[str, Any]) -> WorkloadEntry:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    network = require_str(spec.get("network"), "spec.network")
    # istiod accepts an entry with a network and no address (reached through that network's
    # gateway) with a warning; istiolite has no multi-network gateways, so it has no endpoint.
    address = require_str(spec.get("address"), "spec.address", required=not network)
    ports = parse_ports(spec.get("ports"), "spec.ports")
    if address:
        validate_workload_address(address, ports, "spec.address")
    else:
        note = f"no address: reached through network {network!r}'s gateway, which istiolite "
        note += "does not route to; this entry gives no endpoint"
        meta = replace(meta, unapplied=(("spec.address", note),))
    labels = require_string_map(spec.get("labels"), "spec.labels")
    return WorkloadEntry(
        meta=meta,
        address=address,
        ports=ports,
        labels={**labels, **meta.labels},
        locality=require_str(spec.get("locality"), "spec.locality"),
        weight=parse_weight(spec.get("weight"), "spec.weight"),
        service_account=require_str(spec.get("serviceAccount"), "spec.serviceAccount"),
        network=network,
        healthy=_healthy(meta, raw),
    )
