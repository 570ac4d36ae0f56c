"""VirtualService tcp[] routes through a real Envoy: TCP connections follow weights and subsets."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from istiolite.demo.echo import EchoServer
from tests.support.net import free_port, loopback_ip
from tests.support.processes import start_sidecar_mesh, stop_all
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def _tcp_routes(v1: int, v2: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "db", "namespace": "data"},
        "spec": {
            "hosts": ["db"],
            "tcp": [
                {
                    "match": [{"port": 1}],  # another port: must not apply
                    "route": [{"destination": {"host": "db", "subset": "v1"}}],
                },
                {
                    "route": [
                        {"destination": {"host": "db", "subset": "v1"}, "weight": v1},
                        {"destination": {"host": "db", "subset": "v2"}, "weight": v2},
                    ]
                },
            ],
        },
    }


def test_tcp_connections_follow_subset_weights(tmp_path: Path) -> None:
    port, target = free_port(), free_port()
    pods: list[dict[str, Any]] = []
    servers = []
    for version in ("v1", "v2"):
        ip = loopback_ip()
        servers.append(EchoServer(ip, target, f"db-{version}").start())
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"db-{version}",
                    "namespace": "data",
                    "labels": {"app": "db", "version": version},
                },
                "spec": {"containers": [{"name": "db"}]},
                "status": {"podIP": ip},
            }
        )
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db", "namespace": "data"},
            "spec": {
                "clusterIP": "10.96.9.9",
                "ports": [{"name": "tcp", "port": port, "targetPort": target}],
            },
        },
        *pods,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "db-1",
                "namespace": "data",
                "labels": {"kubernetes.io/service-name": "db"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "tcp", "port": target}],
            "endpoints": [
                {
                    "addresses": [p["status"]["podIP"]],
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": "data",
                        "name": p["metadata"]["name"],
                    },
                }
                for p in pods
            ],
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "db", "namespace": "data"},
            "spec": {
                "host": "db",
                "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")],
            },
        },
    ]
    config = tmp_path / "config"
    config.mkdir()
    (config / "db.yaml").write_text(yaml.safe_dump_all(docs))
    routes = config / "routes.yaml"
    routes.write_text(yaml.safe_dump(_tcp_routes(0, 100)))

    def served_by() -> str:
        # Raw TCP through Envoy's TCP proxy; the upstream happens to speak HTTP.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            return str(json.loads(conn.getresponse().read())["server"])
        finally:
            conn.close()

    cp = envoy = None
    try:
        cp, envoy = start_sidecar_mesh([config], tmp_path, namespace="data", delta=True)
        wait_for(lambda: served_by() == "db-v2", what="tcp route")
        assert {served_by() for _ in range(20)} == {"db-v2"}
        tmp = config / ".routes.tmp"
        tmp.write_text(yaml.safe_dump(_tcp_routes(100, 0)))
        tmp.rename(routes)
        wait_for(lambda: {served_by() for _ in range(5)} == {"db-v1"}, what="shift to v1")
        assert {served_by() for _ in range(20)} == {"db-v1"}
    finally:
        stop_all(envoy, cp)
        for server in servers:
            server.stop()
