"""Builders of Kubernetes-shaped objects (plain dicts) and of PushContexts made from them.

The dicts are what the API server (or a YAML file) would hand istiolite; `parse` and `context` run
them through the real parsers, so a test exercises the same path as the live server.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from istiolite.model.kinds import parse_object
from istiolite.model.meta import ObjectKey
from istiolite.push.context import PushContext

Raw = dict[str, Any]

DOMAIN = "cluster.local"
_versions = itertools.count(1)


def service_port(
    name: str,
    port: int,
    *,
    target_port: int | str | None = None,
    app_protocol: str | None = None,
    protocol: str | None = None,
) -> Raw:
    """One entry of a Service's spec.ports."""
    raw: Raw = {"name": name, "port": port, "targetPort": target_port or port}
    if app_protocol:
        raw["appProtocol"] = app_protocol
    if protocol:
        raw["protocol"] = protocol
    return raw


def service(
    name: str,
    namespace: str = "default",
    *,
    ports: Sequence[Raw] | None = None,
    cluster_ip: str | None = None,
    selector: Mapping[str, str] | None = None,
    type: str | None = None,
    external_name: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Raw:
    spec: Raw = {
        "selector": dict(selector) if selector is not None else {"app": name},
        "ports": list(ports) if ports is not None else [service_port("http", 80)],
    }
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    if type:
        spec["type"] = type
    if external_name:
        spec["externalName"] = external_name
    metadata: Raw = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def endpoint(
    address: str,
    *,
    ready: bool = True,
    zone: str = "",
    node_name: str = "",
    pod: str | None = None,
    namespace: str = "",
) -> Raw:
    """One entry of an EndpointSlice's endpoints; `pod` adds a targetRef to that Pod."""
    raw: Raw = {"addresses": [address], "conditions": {"ready": ready}}
    if zone:
        raw["zone"] = zone
    if node_name:
        raw["nodeName"] = node_name
    if pod:
        raw["targetRef"] = {"kind": "Pod", "name": pod, "namespace": namespace}
    return raw


def endpoint_slice(
    service_name: str,
    namespace: str = "default",
    *,
    endpoints: Iterable[Raw | str] = (),
    ports: Sequence[tuple[str, int]] = (("http", 80),),
    name: str | None = None,
    address_type: str = "IPv4",
) -> Raw:
    """An EndpointSlice of `service_name`; plain strings in `endpoints` are ready addresses."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-slice",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": address_type,
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
        "endpoints": [endpoint(e) if isinstance(e, str) else e for e in endpoints],
    }


def pod(
    name: str,
    namespace: str = "default",
    *,
    ip: str,
    labels: Mapping[str, str] | None = None,
    service_account: str = "default",
    node_name: str = "",
    container_ports: Sequence[tuple[str, int]] = (),
) -> Raw:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {
            "serviceAccountName": service_account,
            "nodeName": node_name,
            "containers": [
                {
                    "name": "app",
                    "ports": [{"name": n, "containerPort": p} for n, p in container_ports],
                }
            ],
        },
        "status": {"podIP": ip},
    }


def namespace(name: str, labels: Mapping[str, str] | None = None) -> Raw:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(labels or {})},
    }


def node(name: str, *, region: str = "", zone: str = "") -> Raw:
    labels = {}
    if region:
        labels["topology.kubernetes.io/region"] = region
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def parse(*raws: Raw) -> dict[ObjectKey, Any]:
    """Typed objects keyed as the store keys them; a later object replaces an earlier one."""
    return dict(parse_object(raw) for raw in raws)


def context(*raws: Raw, domain: str = DOMAIN, version: str | None = None) -> PushContext:
    """A fresh PushContext (with its own empty cache) over these objects."""
    return PushContext(parse(*raws), domain=domain, version=version or f"v{next(_versions)}")


def hostname(name: str, namespace: str = "default", domain: str = DOMAIN) -> str:
    return f"{name}.{namespace}.svc.{domain}"


def outbound_cluster(name: str, port: int, namespace: str = "default") -> str:
    """Istio's outbound cluster name (also the ClusterLoadAssignment name) of a service port."""
    return f"outbound|{port}||{hostname(name, namespace)}"
