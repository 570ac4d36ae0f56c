"""Synthetic meshes for benchmarks: N services x M endpoints, written as Kubernetes YAML."""

from __future__ import annotations

from pathlib import Path

import yaml

PORTS = (18080, 18081, 18082, 18083, 18084)


def _pod_ip(index: int) -> str:
    return f"10.{128 + index // 65536}.{index // 256 % 256}.{index % 256}"


def write_mesh(directory: Path, services: int, endpoints: int, namespaces: int = 10) -> None:
    """One file per service (Service + EndpointSlice), spread over namespaces and a few ports."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(services):
        ns = f"ns-{i % namespaces}"
        name = f"svc-{i}"
        port = PORTS[i % len(PORTS)]
        docs = [
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
                        "addresses": [_pod_ip(i * endpoints + e)],
                        "conditions": {"ready": True},
                        "zone": f"zone-{e % 3}",
                    }
                    for e in range(endpoints)
                ],
            },
        ]
        (directory / f"{name}.yaml").write_text(yaml.safe_dump_all(docs))
