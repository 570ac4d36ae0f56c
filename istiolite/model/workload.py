"""Pods, Namespaces and Nodes: where workloads run and who they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.validation import (
    require_list,
    require_mapping,
    require_port,
    require_str,
)

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"


@dataclass(frozen=True, slots=True)
class ContainerPort:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True, slots=True)
class Pod:
    meta: ObjectMeta
    service_account: str
    node_name: str
    pod_ip: str
    container_ports: tuple[ContainerPort, ...]

    def port_by_name(self, name: str) -> int | None:
        for port in self.container_ports:
            if port.name == name:
                return port.port
        return None


@dataclass(frozen=True, slots=True)
class Namespace:
    meta: ObjectMeta


@dataclass(frozen=True, slots=True)
class Node:
    meta: ObjectMeta

    @property
    def region(self) -> str:
        return self.meta.labels.get(REGION_LABEL, "")

    @property
    def zone(self) -> str:
        return self.meta.labels.get(ZONE_LABEL, "")


def parse_pod(raw: dict[str, Any]) -> Pod:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    status = require_mapping(raw.get("status"), "status")
    ports: list[ContainerPort] = []
    for i, container in enumerate(require_list(spec.get("containers"), "spec.containers")):
        c = require_mapping(container, f"spec.containers[{i}]")
        for j, raw_port in enumerate(require_list(c.get("ports"), f"spec.containers[{i}].ports")):
            where = f"spec.containers[{i}].ports[{j}]"
            p = require_mapping(raw_port, where)
            ports.append(
                ContainerPort(
                    name=require_str(p.get("name"), f"{where}.name"),
                    port=require_port(p.get("containerPort"), f"{where}.containerPort"),
                    protocol=require_str(p.get("protocol"), f"{where}.protocol") or "TCP",
                )
            )
    return Pod(
        meta=meta,
        service_account=require_str(spec.get("serviceAccountName"), "spec.serviceAccountName")
        or "default",
        node_name=require_str(spec.get("nodeName"), "spec.nodeName"),
        pod_ip=require_str(status.get("podIP"), "status.podIP"),
        container_ports=tuple(ports),
    )


def parse_namespace(raw: dict[str, Any]) -> Namespace:
    return Namespace(meta=parse_meta(raw, namespaced=False, dns_label=True))


def parse_node(raw: dict[str, Any]) -> Node:
    return Node(meta=parse_meta(raw, namespaced=False))
