"""Writing Kubernetes YAML for a test mesh: Services and their EndpointSlices, one file each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def service(
    name: str,
    namespace: str,
    port: int,
    *,
    target_port: int | None = None,
    port_name: str = "http",
    cluster_ip: str | None = None,
    selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": selector or {"app": name},
        "ports": [{"name": port_name, "port": port, "targetPort": target_port or port}],
    }
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def endpoint_slice(
    service_name: str,
    namespace: str,
    port: int,
    addresses: list[str],
    *,
    port_name: str = "http",
    not_ready: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-slice",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [a], "conditions": {"ready": a not in not_ready}} for a in addresses
        ],
    }


def write(path: Path, *objects: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename), as editors and kubectl-style tools do."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump_all(list(objects), sort_keys=False))
    tmp.rename(path)
    return path
