"""networking.istio.io ServiceEntry: hosts outside (or inside) the mesh added to the registry.

Each host becomes a Service with that host name, so clusters, endpoints, routes and listeners
come from the same generators as Kubernetes Services.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.protocol import protocol_for_port
from istiolite.model.service import Service, ServicePort
from istiolite.model.validation import (
    ValidationError,
    require_list,
    require_mapping,
    require_port,
    require_str,
    require_string_map,
)
from istiolite.model.virtualservice import validate_host
from istiolite.model.visibility import parse_export_to
from istiolite.model.workloadentry import (
    UNIX_PREFIX,
    parse_ports,
    parse_weight,
    validate_workload_address,
)

RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")


@dataclass(frozen=True, slots=True)
class WorkloadEndpoint:
    address: str
    ports: dict[str, int]  # port name -> endpoint port
    labels: dict[str, str]
    locality: str
    weight: int
    service_account: str = ""


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    meta: ObjectMeta
    hosts: tuple[str, ...]
    addresses: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    location: str
    resolution: str
    endpoints: tuple[WorkloadEndpoint, ...]
    export_to: tuple[str, ...]
    # Selects WorkloadEntries (in the entry's namespace) as endpoints, instead of `endpoints`.
    workload_selector: dict[str, str] | None = None
    # SANs upstream certificates may carry (istiod: the service's ServiceAccounts).
    subject_alt_names: tuple[str, ...] = ()

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    def services(self) -> list[Service]:
        """One registry service per host; STATIC and DNS endpoints are served by the registry.

        istiod makes a service per host and address; istiolite keeps one per host, with every
        address in `addresses` (each wants its own TCP listener) and the first as `cluster_ip`
        (istiod's sidecar scope keeps the first of a host's services, hence its address)."""
        return [
            Service(
                meta=self.meta,
                ports=self.ports,
                cluster_ip=self.addresses[0] if self.addresses else "",
                type="ServiceEntry",
                host=host,
                resolution=self.resolution,
                export_to=self.export_to,
                addresses=self.addresses,
                subject_alt_names=self.subject_alt_names,
                mesh_external=self.location == "MESH_EXTERNAL",
            )
            for host in self.hosts
        ]


def _address(raw: Any, where: str) -> str:
    """An IP or CIDR; a CIDR of one address is written as that IP, as istiod does."""
    text = str(raw)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValidationError(where, f"{raw!r} is not an IP or CIDR") from None
    if network.num_addresses == 1:
        return str(network.network_address)
    return text


# istiod allows a ServiceEntry host with a wildcard suffix match (`*x`, "weird but allowed").
_PARTIAL_WILDCARD = re.compile(r"^\*[a-z0-9][-a-z0-9.]*$")


def _host(raw: Any, where: str) -> str:
    if isinstance(raw, str) and _PARTIAL_WILDCARD.match(raw.lower()) and raw[1] != ".":
        return raw.lower()
    return validate_host(raw, where)


def is_partial_wildcard(host: str) -> bool:
    """`*x`: a name ending in x, which a TLS SNI match cannot express."""
    return host.startswith("*") and not host.startswith("*.") and host != "*"


def _subject_alt_names(raw: Any) -> tuple[str, ...]:
    names = require_list(raw, "spec.subjectAltNames")
    return tuple(
        require_str(name, f"spec.subjectAltNames[{i}]", required=True)
        for i, name in enumerate(names)
    )


def _endpoint(raw: Any, where: str, resolution: str, port_names: set[str]) -> WorkloadEndpoint:
    e = require_mapping(raw, where)
    address = require_str(e.get("address"), f"{where}.address", required=True)
    ports = parse_ports(e.get("ports"), f"{where}.ports")
    if resolution == "STATIC" and not address.startswith(UNIX_PREFIX):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValidationError(
                f"{where}.address", f"{address!r} must be an IP address with resolution STATIC"
            ) from None
    else:
        validate_workload_address(address, ports, f"{where}.address")
    if address.startswith(UNIX_PREFIX) and resolution != "STATIC":
        # Envoy resolves DNS clusters' addresses by name: a socket file is not one.
        raise ValidationError(
            f"{where}.address", f"a Unix socket endpoint needs resolution STATIC, not {resolution}"
        )
    for name in ports:
        if name not in port_names:
            raise ValidationError(f"{where}.ports.{name}", "is not a port of the ServiceEntry")
    return WorkloadEndpoint(
        address=address,
        ports=ports,
        labels=require_string_map(e.get("labels"), f"{where}.labels"),
        locality=require_str(e.get("locality"), f"{where}.locality"),
        weight=parse_weight(e.get("weight"), f"{where}.weight"),
        service_account=require_str(e.get("serviceAccount"), f"{where}.serviceAccount"),
    )


def parse_service_entry(raw: dict[str, Any]) -> ServiceEntry:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    hosts = require_list(spec.get("hosts"), "spec.hosts")
    if not hosts:
        raise ValidationError("spec.hosts", "at least one host is required")
    for i, host in enumerate(hosts):
        if host == "*":  # it would capture every name (istiod refuses it too)
            raise ValidationError(f"spec.hosts[{i}]", "a ServiceEntry host cannot be '*'")
    checked = tuple(_host(h, f"spec.hosts[{i}]") for i, h in enumerate(hosts))
    resolution = require_str(spec.get("resolution"), "spec.resolution") or "NONE"
    if resolution not in RESOLUTIONS:
        raise ValidationError("spec.resolution", f"must be one of {', '.join(RESOLUTIONS)}")
    location = require_str(spec.get("location"), "spec.location") or "MESH_EXTERNAL"
    if location not in ("MESH_EXTERNAL", "MESH_INTERNAL"):
        raise ValidationError("spec.location", "must be MESH_EXTERNAL or MESH_INTERNAL")
    addresses = tuple(
        _address(a, f"spec.addresses[{i}]")
        for i, a in enumerate(require_list(spec.get("addresses"), "spec.addresses"))
    )
    if any("/" in a for a in addresses) and resolution not in ("NONE", "STATIC"):
        raise ValidationError(
            "spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types"
        )
    ports: list[ServicePort] = []
    for i, item in enumerate(require_list(spec.get("ports"), "spec.ports")):
        p = require_mapping(item, f"spec.ports[{i}]")
        number = require_port(p.get("number"), f"spec.ports[{i}].number")
        name = require_str(p.get("name"), f"spec.ports[{i}].name", required=True)
        for earlier in ports:
            if earlier.name == name:
                raise ValidationError(f"spec.ports[{i}].name", f"port name {name!r} is repeated")
            if earlier.port == number:
                raise ValidationError(f"spec.ports[{i}].number", f"port {number} is repeated")
        protocol = require_str(p.get("protocol"), f"spec.ports[{i}].protocol")
        target = p.get("targetPort")
        ports.append(
            ServicePort(
                name=name,
                port=number,
                protocol=protocol_for_port(name, protocol.lower(), "TCP"),
                l4_protocol="TCP",
                app_protocol=protocol,
                target_port=require_port(target, f"spec.ports[{i}].targetPort")
                if target
                else number,
            )
        )
    # No ports is valid Istio (the entry then only names hosts: nothing is routed to it).
    endpoints = tuple(
        _endpoint(e, f"spec.endpoints[{i}]", resolution, {p.name for p in ports})
        for i, e in enumerate(require_list(spec.get("endpoints"), "spec.endpoints"))
    )
    if resolution == "NONE" and endpoints:
        raise ValidationError(
            "spec.endpoints", "resolution NONE cannot have endpoints (traffic keeps its address)"
        )
    if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
        raise ValidationError(
            "spec.endpoints", "resolution DNS_ROUND_ROBIN cannot have more than one endpoint"
        )
    unix = [e.address for e in endpoints if e.address.startswith(UNIX_PREFIX)]
    if unix and len(ports) != 1:
        raise ValidationError(
            "spec.ports", f"exactly one port is needed with Unix socket endpoints ({unix[0]!r})"
        )
    selector = None
    if spec.get("workloadSelector") is not None:
        ws = require_mapping(spec["workloadSelector"], "spec.workloadSelector")
        selector = require_string_map(ws.get("labels"), "spec.workloadSelector.labels")
        for key, value in selector.items():
            if "*" in value:
                raise ValidationError(
                    f"spec.workloadSelector.labels.{key}", "a wildcard is not supported in selector"
                )
        if endpoints:
            raise ValidationError("spec.workloadSelector", "cannot be combined with spec.endpoints")
    if resolution == "STATIC" and not endpoints and selector is None:
        raise ValidationError("spec.endpoints", "resolution STATIC needs endpoints")
    return ServiceEntry(
        meta=meta,
        hosts=checked,
        addresses=addresses,
        ports=tuple(ports),
        location=location,
        resolution=resolution,
        endpoints=endpoints,
        export_to=parse_export_to(
            spec.get("exportTo"), "spec.exportTo", meta.namespace, allow_none=True
        ),
        workload_selector=selector,
        subject_alt_names=_subject_alt_names(spec.get("subjectAltNames")),
    )
