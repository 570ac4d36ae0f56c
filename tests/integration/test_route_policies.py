"""Retries, timeouts, fault injection, mirroring and CORS from a VirtualService, through a real
Envoy, against upstreams that misbehave on purpose."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.net import free_port, http_request, loopback_ip
from tests.support.processes import start_sidecar_mesh, stop_all
from tests.support.upstream import BehaviourServer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NS = "shop"


@dataclass
class Mesh:
    config: Path
    port: int
    target: int
    servers: dict[str, BehaviourServer] = field(default_factory=dict)
    procs: list[Any] = field(default_factory=list)

    def request(
        self, host: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], float]:
        started = time.monotonic()
        reply = http_request(
            "127.0.0.1", self.port, host, path, method=method, headers=headers, timeout=10
        )
        return reply.status, reply.headers, time.monotonic() - started

    def service(self, name: str) -> list[dict[str, Any]]:
        ip = loopback_ip()
        self.servers[name] = BehaviourServer(ip, self.target, name).start()
        return [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"ports": [{"name": "http", "port": self.port, "targetPort": self.target}]},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-1",
                    "namespace": NS,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": self.target}],
                "endpoints": [{"addresses": [ip]}],
            },
        ]


ROUTES: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "api", "namespace": NS},
    "spec": {
        "hosts": ["api"],
        "http": [
            {
                "match": [{"uri": {"prefix": "/flaky"}}],
                "retries": {"attempts": 3, "retryOn": "5xx"},
                "route": [{"destination": {"host": "api"}}],
            },
            {
                "match": [{"uri": {"prefix": "/never-retried"}}],
                "retries": {"attempts": 0},
                "rewrite": {"uri": "/flaky"},
                "route": [{"destination": {"host": "api"}}],
            },
            {
                "match": [{"uri": {"prefix": "/slow"}}],
                "timeout": "0.5s",
                "route": [{"destination": {"host": "api"}}],
            },
            {
                "match": [{"uri": {"prefix": "/abort"}}],
                "fault": {"abort": {"httpStatus": 429, "percentage": {"value": 50}}},
                "route": [{"destination": {"host": "api"}}],
            },
            {
                "match": [{"uri": {"prefix": "/delay"}}],
                "fault": {"delay": {"fixedDelay": "400ms", "percentage": {"value": 100}}},
                "route": [{"destination": {"host": "api"}}],
            },
            {
                "match": [{"uri": {"prefix": "/mirrored"}}],
                "mirror": {"host": "shadow"},
                "mirrorPercentage": {"value": 100},
                "route": [{"destination": {"host": "api"}}],
            },
            {
                "corsPolicy": {
                    "allowOrigins": [{"exact": "https://shop.example"}],
                    "allowMethods": ["GET", "POST"],
                    "allowHeaders": ["x-token"],
                    "maxAge": "24h",
                },
                "route": [{"destination": {"host": "api"}}],
            },
        ],
    },
}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    config = tmp_path / "config"
    config.mkdir()
    m = Mesh(config, port=free_port(), target=free_port())
    try:
        docs = [*m.service("api"), *m.service("shadow"), ROUTES]
        (config / "mesh.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        m.procs += start_sidecar_mesh([config], tmp_path, namespace=NS, delta=False)
        wait_for(lambda: m.request("api", "/")[0] == 200, what="api routable")
        yield m
    finally:
        stop_all(*reversed(m.procs))
        for server in m.servers.values():
            server.stop()


def test_retries_hide_a_failed_first_attempt(mesh: Mesh) -> None:
    for _ in range(5):
        assert mesh.request("api", "/flaky")[0] == 200
    # Each client request took two upstream attempts: a 503, then the retried 200.
    assert mesh.servers["api"].count("/flaky") == 10
    # attempts: 0 turns retries off, even istiod's default ones: the 503 reaches the client.
    statuses = Counter(mesh.request("api", "/never-retried")[0] for _ in range(4))
    assert statuses == {503: 2, 200: 2}


def test_timeout_gives_504_after_about_the_configured_time(mesh: Mesh) -> None:
    status, _, took = mesh.request("api", "/slow/2000")
    assert status == 504
    assert 0.4 <= took < 1.5, took
    assert mesh.request("api", "/slow/10")[0] == 200


def test_fault_abort_hits_about_the_configured_share(mesh: Mesh) -> None:
    statuses = Counter(mesh.request("api", "/abort")[0] for _ in range(300))
    assert set(statuses) == {200, 429}
    assert 0.38 <= statuses[429] / 300 <= 0.62, statuses


def test_fault_delay_is_observed(mesh: Mesh) -> None:
    status, _, took = mesh.request("api", "/delay")
    assert status == 200
    assert took >= 0.38, took
    _, _, quick = mesh.request("api", "/")
    assert quick < 0.3


def test_mirror_sends_copies_to_the_shadow(mesh: Mesh) -> None:
    for _ in range(5):
        assert mesh.request("api", "/mirrored")[0] == 200
    wait_for(lambda: mesh.servers["shadow"].count("/mirrored") == 5, what="5 mirrored copies")
    assert mesh.servers["api"].count("/mirrored") == 5


def test_cors_preflight_is_answered_by_envoy(mesh: Mesh) -> None:
    status, headers, _ = mesh.request(
        "api",
        "/anything",
        method="OPTIONS",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://shop.example"
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-max-age"] == "86400"
    assert mesh.servers["api"].count("/anything") == 0  # the preflight never reached the app
    _, other, _ = mesh.request(
        "api",
        "/anything",
        method="OPTIONS",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other
