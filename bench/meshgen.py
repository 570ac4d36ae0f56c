"""Synthetic meshes for benchmarks: N services x M endpoints, written as Kubernetes YAML.

Service `svc-<i>` lives in namespace `ns-<i % namespaces>`, serves one HTTP port out of `PORTS`
and has one EndpointSlice with `endpoints` ready addresses; each service is one file
`svc-<i>.yaml`, so a benchmark can change one service by rewriting one file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

PORTS = (18080, 18081, 18082, 18083, 18084)
DOMAIN = "cluster.local"


def _pod_ip(index: int) -> str:
    return f"10.{128 + index // 65536}.{index // 256 % 256}.{index % 256}"


def service_name(i: int) -> str:
    return f"svc-{i}"


def service_namespace(i: int, namespaces: int = 10) -> str:
    return f"ns-{i % namespaces}"


def service_port(i: int) -> int:
    return PORTS[i % len(PORTS)]


def endpoint_ips(i: int, endpoints: int) -> list[str]:
    """The addresses `write_mesh` gives service `i`."""
    return [_pod_ip(i * endpoints + e) for e in range(endpoints)]


def cluster_name(i: int, namespaces: int = 10, *, name: str | None = None) -> str:
    """Istio's outbound cluster name for service `i` (public naming contract)."""
    host = f"{name or service_name(i)}.{service_namespace(i, namespaces)}.svc.{DOMAIN}"
    return f"outbound|{service_port(i)}||{host}"


def service_docs(
    i: int,
    ips: Sequence[str],
    namespaces: int = 10,
    *,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """Service + EndpointSlice for service number `i` (`name` overrides `svc-<i>`)."""
    ns = service_namespace(i, namespaces)
    name = name or service_name(i)
    port = service_port(i)
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "clusterIP": f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}",
                "selector": {"app": name},
                "ports": [{"name": "http", "port": port, "targetPort": 8080}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-abc",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {
                    "addresses": [ip],
                    "conditions": {"ready": True},
                    "zone": f"zone-{e % 3}",
                }
                for e, ip in enumerate(ips)
            ],
        },
    ]


def write_mesh(directory: Path, services: int, endpoints: int, namespaces: int = 10) -> None:
    """One file per service (Service + EndpointSlice), spread over namespaces and a few ports."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(services):
        docs = service_docs(i, endpoint_ips(i, endpoints), namespaces)
        (directory / f"{service_name(i)}.yaml").write_text(yaml.safe_dump_all(docs))


def replace_file(path: Path, docs: list[dict[str, Any]], scratch: Path) -> None:
    """Write `docs` to `path` atomically (written under `scratch`, then renamed into place), so a
    watcher sees one complete new file, as with a ConfigMap update or an editor's save."""
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / (path.name + ".tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    os.replace(tmp, path)
