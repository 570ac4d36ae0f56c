"""DestinationRule traffic policies through a real Envoy: circuit breaker overflow, outlier
ejection, consistent hashing on a header."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.net import Reply, free_port, http_request, loopback_ip
from tests.support.processes import EnvoyProcess, IstioliteProcess, start_sidecar_mesh, stop_all
from tests.support.upstream import NamedUpstream
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NS = "shop"
HOST = f"backend.{NS}.svc.cluster.local"


@dataclass
class Mesh:
    tmp: Path
    config: Path
    port: int
    target: int
    upstreams: list[NamedUpstream] = field(default_factory=list)
    istiolite: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None

    def get(self, headers: dict[str, str] | None = None, timeout: float = 10) -> Reply:
        return http_request("127.0.0.1", self.port, "backend", headers=headers, timeout=timeout)

    def start(self, pods: dict[str, dict[str, Any]], traffic_policy: dict[str, Any]) -> None:
        """Pods by name ({"status": ..., "delay": ...}), one Service over them, and a
        DestinationRule with this traffic policy; then istiolite and a synced Envoy."""
        ips = {}
        for name, options in pods.items():
            ips[name] = loopback_ip()
            self.upstreams.append(NamedUpstream(ips[name], self.target, name, **options).start())
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "backend", "namespace": NS},
                "spec": {
                    "selector": {"app": "backend"},
                    "ports": [{"name": "http", "port": self.port, "targetPort": self.target}],
                },
            },
            *[
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": NS, "labels": {"app": "backend"}},
                    "spec": {"containers": [{"name": "app"}]},
                    "status": {"podIP": ip},
                }
                for name, ip in ips.items()
            ],
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "backend-1",
                    "namespace": NS,
                    "labels": {"kubernetes.io/service-name": "backend"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": self.target}],
                "endpoints": [
                    {
                        "addresses": [ip],
                        "targetRef": {"kind": "Pod", "namespace": NS, "name": name},
                    }
                    for name, ip in ips.items()
                ],
            },
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "backend", "namespace": NS},
                "spec": {"host": "backend", "trafficPolicy": traffic_policy},
            },
        ]
        (self.config / "backend.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        self.istiolite, self.envoy = start_sidecar_mesh([self.config], self.tmp, namespace=NS)
        wait_for(
            lambda: len(self.envoy.cluster_endpoints(self.cluster)) == len(pods),  # type: ignore[union-attr]
            what="endpoints in envoy",
        )
        wait_for(lambda: self.get().status != 404, what="backend routable")

    @property
    def cluster(self) -> str:
        return f"outbound|{self.port}||{HOST}"

    def cluster_config(self) -> dict[str, Any]:
        assert self.envoy is not None
        for config in self.envoy.config_dump("dynamic_active_clusters")["configs"]:
            if config["cluster"]["name"] == self.cluster:
                return dict(config["cluster"])
        raise AssertionError(f"no cluster {self.cluster}")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    config = tmp_path / "config"
    config.mkdir()
    m = Mesh(tmp_path, config, port=free_port(), target=free_port())
    try:
        yield m
    finally:
        stop_all(m.envoy, m.istiolite)
        for upstream in m.upstreams:
            upstream.stop()


def test_circuit_breaker_overflows_with_503_and_overloaded_header(mesh: Mesh) -> None:
    mesh.start(
        {"slow-1": {"delay": 0.5}},
        {
            "connectionPool": {
                "tcp": {"maxConnections": 1},
                "http": {"http1MaxPendingRequests": 1},
            }
        },
    )
    thresholds = mesh.cluster_config()["circuit_breakers"]["thresholds"][0]
    assert thresholds["max_connections"] == 1 and thresholds["max_pending_requests"] == 1

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: mesh.get(), range(8)))
    statuses = Counter(r.status for r in replies)
    overflowed = [r for r in replies if r.status == 503]
    # One request in flight, one pending: the rest overflow at once.
    assert statuses[200] >= 1, statuses
    assert len(overflowed) >= 4, statuses
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overflowed), overflowed
    assert set(statuses) <= {200, 503}, statuses
    stats = mesh.envoy.stats()  # type: ignore[union-attr]
    assert stats.get(f"cluster.{mesh.cluster}.upstream_rq_pending_overflow", 0) >= 4


def test_outlier_detection_ejects_the_failing_endpoint(mesh: Mesh) -> None:
    mesh.start(
        {"healthy": {}, "broken": {"status": 500}},
        {
            "loadBalancer": {"simple": "ROUND_ROBIN"},
            "outlierDetection": {
                "consecutive5xxErrors": 1,
                "interval": "1s",
                "baseEjectionTime": "3m",
                "maxEjectionPercent": 100,
            },
        },
    )
    outlier = mesh.cluster_config()["outlier_detection"]
    assert outlier["consecutive_5xx"] == 1 and outlier["enforcing_consecutive_5xx"] == 100

    # Round robin reaches the broken pod within a few requests (or the fixture's readiness probe
    # already did); its first 500 ejects it.
    for _ in range(6):
        mesh.get()
    stats = mesh.envoy.stats()  # type: ignore[union-attr]
    assert stats.get(f"cluster.{mesh.cluster}.outlier_detection.ejections_enforced_total", 0) >= 1
    replies = [mesh.get() for _ in range(30)]
    assert [r.status for r in replies] == [200] * 30
    assert {r.body for r in replies} == {"healthy"}
    stats = mesh.envoy.stats()  # type: ignore[union-attr]
    assert stats.get(f"cluster.{mesh.cluster}.outlier_detection.ejections_active", 0) == 1


def test_consistent_hash_on_a_header_is_sticky(mesh: Mesh) -> None:
    mesh.start(
        {f"pod-{i}": {} for i in range(4)},
        {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}},
    )
    assert mesh.cluster_config()["lb_policy"] == "RING_HASH"
    assert mesh.envoy is not None
    routes = str(mesh.envoy.config_dump("dynamic_route_configs"))
    assert "hash_policy" in routes, "the route must hash on x-user for the ring to be used"

    chosen: dict[str, str] = {}
    for user in (f"user-{n}" for n in range(24)):
        seen = {mesh.get({"x-user": user}).body for _ in range(8)}
        assert len(seen) == 1, f"{user} landed on {seen}"
        chosen[user] = seen.pop()
    # Different keys spread over the endpoints (24 users on one pod of four: ~1e-14).
    assert len(set(chosen.values())) > 1, chosen
