"""discovery.k8s.io/v1 EndpointSlice: the endpoints of one Service."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.validation import (
    ValidationError,
    optional_bool,
    require_list,
    require_mapping,
    require_port,
    require_str,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class TargetRef:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    # Kubernetes: a nil `ready` means ready; serving defaults to ready.
    ready: bool
    serving: bool
    terminating: bool
    zone: str
    node_name: str
    hostname: str
    target_ref: TargetRef | None


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int
    protocol: str
    app_protocol: str


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    meta: ObjectMeta
    service_name: str
    address_type: str
    endpoints: tuple[Endpoint, ...]
    ports: tuple[EndpointPort, ...]

    @property
    def namespace(self) -> str:
        return self.meta.namespace


def _parse_endpoint(raw: Any, where: str, address_type: str) -> Endpoint:
    e = require_mapping(raw, where)
    addresses = require_list(e.get("addresses"), f"{where}.addresses")
    if not addresses:
        raise ValidationError(f"{where}.addresses", "at least one address is required")
    for j, address in enumerate(addresses):
        if address_type == "FQDN":
            require_str(address, f"{where}.addresses[{j}]", required=True)
            continue
        try:
            # ip_address() also takes ints (and so bools): YAML `true` or `167772161` would pass.
            if not isinstance(address, str):
                raise TypeError(address)
            ip = ipaddress.ip_address(address)
        except (ValueError, TypeError):
            raise ValidationError(
                f"{where}.addresses[{j}]", f"{address!r} is not an IP address"
            ) from None
        if (ip.version == 4) != (address_type == "IPv4"):
            raise ValidationError(
                f"{where}.addresses[{j}]", f"{address} does not match addressType {address_type}"
            )
    cond = require_mapping(e.get("conditions"), f"{where}.conditions")
    ready = optional_bool(cond.get("ready"), f"{where}.conditions.ready")
    serving = optional_bool(cond.get("serving"), f"{where}.conditions.serving")
    terminating = optional_bool(cond.get("terminating"), f"{where}.conditions.terminating")
    ref = None
    raw_ref = e.get("targetRef")
    if raw_ref is not None:
        r = require_mapping(raw_ref, f"{where}.targetRef")
        ref = TargetRef(
            kind=require_str(r.get("kind"), f"{where}.targetRef.kind"),
            namespace=require_str(r.get("namespace"), f"{where}.targetRef.namespace"),
            name=require_str(r.get("name"), f"{where}.targetRef.name", required=True),
        )
    is_ready = True if ready is None else ready
    return Endpoint(
        addresses=tuple(str(a) for a in addresses),
        ready=is_ready,
        serving=is_ready if serving is None else serving,
        terminating=bool(terminating),
        zone=require_str(e.get("zone"), f"{where}.zone"),
        node_name=require_str(e.get("nodeName"), f"{where}.nodeName"),
        hostname=require_str(e.get("hostname"), f"{where}.hostname"),
        target_ref=ref,
    )


def parse_endpointslice(raw: dict[str, Any]) -> EndpointSlice:
    meta = parse_meta(raw, namespaced=True)
    service_name = meta.labels.get(SERVICE_NAME_LABEL, "")
    if not service_name:
        raise ValidationError(
            f"metadata.labels[{SERVICE_NAME_LABEL}]", "is required to link the slice to a Service"
        )
    address_type = require_str(raw.get("addressType"), "addressType", required=True)
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        raise ValidationError("addressType", f"must be IPv4, IPv6 or FQDN, got {address_type!r}")
    endpoints = tuple(
        _parse_endpoint(e, f"endpoints[{i}]", address_type)
        for i, e in enumerate(require_list(raw.get("endpoints"), "endpoints"))
    )
    ports: list[EndpointPort] = []
    for i, raw_port in enumerate(require_list(raw.get("ports"), "ports")):
        p = require_mapping(raw_port, f"ports[{i}]")
        ports.append(
            EndpointPort(
                name=require_str(p.get("name"), f"ports[{i}].name"),
                port=require_port(p.get("port"), f"ports[{i}].port"),
                protocol=require_str(p.get("protocol"), f"ports[{i}].protocol") or "TCP",
                app_protocol=require_str(p.get("appProtocol"), f"ports[{i}].appProtocol"),
            )
        )
    return EndpointSlice(
        meta=meta,
        service_name=service_name,
        address_type=address_type,
        endpoints=endpoints,
        ports=tuple(ports),
    )
