"""Kubernetes Service (core/v1) as the mesh sees it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.protocol import Protocol, protocol_for_port
from istiolite.model.validation import (
    ValidationError,
    require_list,
    require_mapping,
    require_port,
    require_str,
    require_string_map,
)
from istiolite.model.visibility import parse_export_annotation

HEADLESS = "None"


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: Protocol
    l4_protocol: str
    app_protocol: str
    target_port: int | str  # a number, or the name of a container port


@dataclass(frozen=True, slots=True)
class Service:
    meta: ObjectMeta
    ports: tuple[ServicePort, ...]
    cluster_ip: str  # "" when unset, "None" when headless
    selector: dict[str, str] = field(default_factory=dict)
    type: str = "ClusterIP"
    external_name: str = ""
    # Set for services a ServiceEntry declares: their host is not <name>.<ns>.svc.<domain>.
    host: str = ""
    # ServiceEntry resolution: NONE (pass through), STATIC (its endpoints), DNS.
    resolution: str = ""
    # Namespaces that see it (annotation networking.istio.io/exportTo, or the entry's exportTo).
    export_to: tuple[str, ...] = ()
    # A ServiceEntry's `addresses` (IPs or CIDRs), in order; `cluster_ip` is the first.
    addresses: tuple[str, ...] = ()
    # A ServiceEntry's `subjectAltNames`: identities its upstreams may present (ISTIO_MUTUAL).
    subject_alt_names: tuple[str, ...] = ()
    # A ServiceEntry with location MESH_EXTERNAL (its default): no auto mTLS to it.
    mesh_external: bool = False

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def headless(self) -> bool:
        return self.cluster_ip == HEADLESS

    def hostname(self, domain: str) -> str:
        if self.host:
            return self.host
        return f"{self.meta.name}.{self.meta.namespace}.svc.{domain}"


def parse_service(raw: dict[str, Any]) -> Service:
    meta = parse_meta(raw, namespaced=True, dns_label=True)
    spec = require_mapping(raw.get("spec"), "spec")
    svc_type = require_str(spec.get("type"), "spec.type") or "ClusterIP"
    if svc_type not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        raise ValidationError("spec.type", f"unknown Service type {svc_type!r}")
    cluster_ip = require_str(spec.get("clusterIP"), "spec.clusterIP")
    if cluster_ip and cluster_ip != HEADLESS:
        try:
            ipaddress.ip_address(cluster_ip)
        except ValueError:
            raise ValidationError(
                "spec.clusterIP", f"{cluster_ip!r} is not an IP address or 'None'"
            ) from None
    raw_ports = require_list(spec.get("ports"), "spec.ports")
    if not raw_ports and svc_type != "ExternalName" and cluster_ip != HEADLESS:
        raise ValidationError("spec.ports", "at least one port is required")
    ports: list[ServicePort] = []
    seen_names: set[str] = set()
    seen_numbers: set[tuple[int, str]] = set()
    for i, raw_port in enumerate(raw_ports):
        where = f"spec.ports[{i}]"
        p = require_mapping(raw_port, where)
        name = require_str(p.get("name"), f"{where}.name")
        if len(raw_ports) > 1 and not name:
            raise ValidationError(f"{where}.name", "is required when a Service has several ports")
        if name in seen_names and name:
            raise ValidationError(f"{where}.name", f"duplicate port name {name!r}")
        seen_names.add(name)
        number = require_port(p.get("port"), f"{where}.port")
        l4 = require_str(p.get("protocol"), f"{where}.protocol") or "TCP"
        if l4 not in ("TCP", "UDP", "SCTP"):
            raise ValidationError(f"{where}.protocol", f"must be TCP, UDP or SCTP, got {l4!r}")
        if (number, l4) in seen_numbers:
            raise ValidationError(f"{where}.port", f"duplicate port {number}/{l4}")
        seen_numbers.add((number, l4))
        target: int | str
        raw_target = p.get("targetPort")
        if raw_target is None:
            target = number
        elif isinstance(raw_target, str):
            target = int(raw_target) if raw_target.isdigit() else raw_target
            if isinstance(target, int):
                require_port(target, f"{where}.targetPort")
        else:
            target = require_port(raw_target, f"{where}.targetPort")
        app_protocol = require_str(p.get("appProtocol"), f"{where}.appProtocol")
        ports.append(
            ServicePort(
                name=name,
                port=number,
                protocol=protocol_for_port(name, app_protocol, l4),
                l4_protocol=l4,
                app_protocol=app_protocol,
                target_port=target,
            )
        )
    return Service(
        meta=meta,
        ports=tuple(ports),
        cluster_ip=cluster_ip,
        selector=require_string_map(spec.get("selector"), "spec.selector"),
        type=svc_type,
        external_name=require_str(spec.get("externalName"), "spec.externalName"),
        export_to=parse_export_annotation(meta.annotations, meta.namespace),
    )
