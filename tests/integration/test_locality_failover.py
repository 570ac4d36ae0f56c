"""Locality load balancing through a real Envoy: a caller in zone A stays in zone A while it is
healthy, fails over to zone B when outlier detection ejects it, comes back when a healthy zone-A
endpoint appears (an endpoint-only push reaching the caller's locality variant), and follows
`distribute` weights."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import mesh as mesh_yaml
from tests.support.net import free_port, loopback_ip
from tests.support.processes import EnvoyProcess, IstioliteProcess, http_get, stop_all
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NS = "shop"
HOST = f"backend.{NS}.svc.cluster.local"
REGION = "r1"


class Upstream:
    """A threaded HTTP/1.1 server answering its name with `status` (changeable while running)."""

    def __init__(self, host: str, port: int, name: str) -> None:
        self.name = name
        self.status = 200
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = upstream.name.encode()
                self.send_response(upstream.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def node(name: str, zone: str) -> dict[str, Any]:
    labels = {"topology.kubernetes.io/region": REGION, "topology.kubernetes.io/zone": zone}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def slice_of(name: str, port: int, endpoints: list[tuple[str, str]]) -> dict[str, Any]:
    """An EndpointSlice of backend: (address, zone) pairs, each on that zone's Node."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": "backend"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": [
            {"addresses": [ip], "zone": zone, "nodeName": f"node-{zone}"} for ip, zone in endpoints
        ],
    }


@dataclass
class Mesh:
    tmp: Path
    config: Path
    port: int
    target: int
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    istiolite: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None

    def upstream(self, name: str) -> str:
        ip = loopback_ip()
        self.upstreams[name] = Upstream(ip, self.target, name)
        self.addresses[name] = ip
        return ip

    def get(self) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/", headers={"Host": "backend"})
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def bodies(self, n: int) -> Counter[str]:
        return Counter(body for status, body in (self.get() for _ in range(n)) if status == 200)

    @property
    def cluster(self) -> str:
        return f"outbound|{self.port}||{HOST}"

    def start(self, traffic_policy: dict[str, Any]) -> None:
        """Nodes in zones z-a and z-b of one region; the caller's Pod on the z-a Node; backend
        with one endpoint per zone and a DestinationRule with this traffic policy."""
        a, b = self.upstream("zone-a"), self.upstream("zone-b")
        mesh_yaml.write(
            self.config / "mesh.yaml",
            node("node-z-a", "z-a"),
            node("node-z-b", "z-b"),
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "client-1", "namespace": NS, "labels": {"app": "client"}},
                "spec": {"nodeName": "node-z-a", "containers": [{"name": "app"}]},
                "status": {"podIP": "127.0.0.1"},
            },
            mesh_yaml.service("backend", NS, self.port, target_port=self.target),
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "backend", "namespace": NS},
                "spec": {"host": "backend", "trafficPolicy": traffic_policy},
            },
        )
        mesh_yaml.write(
            self.config / "backend-1.yaml",
            slice_of("backend-1", self.target, [(a, "z-a"), (b, "z-b")]),
        )
        self.istiolite = IstioliteProcess([self.config], self.tmp)
        self.envoy = EnvoyProcess(
            self.tmp,
            self.istiolite.xds_address,
            f"sidecar~127.0.0.1~client-1.{NS}~{NS}.svc.cluster.local",
            delta=True,
            meta={"NAMESPACE": NS, "INTERCEPTION_MODE": "NONE"},
        )
        wait_for(self.envoy.synced, what="envoy synced")
        wait_for(lambda: len(self.envoy.cluster_endpoints(self.cluster)) == 2, what="endpoints")  # type: ignore[union-attr]
        wait_for(lambda: self.get()[0] == 200, what="backend routable")

    def envoy_localities(self) -> dict[str, tuple[int, int]]:
        """zone -> (priority, locality weight) of the cluster's endpoints as Envoy holds them."""
        assert self.envoy is not None
        dump = self.envoy.config_dump("dynamic_endpoint_configs")
        for config in dump["configs"]:
            cla = config["endpoint_config"]
            if cla["cluster_name"] == self.cluster:
                return {
                    group["locality"]["zone"]: (
                        group.get("priority", 0),
                        group.get("load_balancing_weight", 0),
                    )
                    for group in cla.get("endpoints", [])
                    if group.get("lb_endpoints")
                }
        raise AssertionError(f"no endpoints for {self.cluster}")

    def push_status(self) -> dict[str, Any]:
        assert self.istiolite is not None
        _, body = http_get(f"http://127.0.0.1:{self.istiolite.http_port}/debug/push_status")
        return dict(json.loads(body))


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    config = tmp_path / "config"
    config.mkdir()
    m = Mesh(tmp_path, config, port=free_port(), target=free_port())
    try:
        yield m
    finally:
        stop_all(m.envoy, m.istiolite)
        for upstream in m.upstreams.values():
            upstream.stop()


def test_traffic_stays_in_the_callers_zone_and_fails_over_when_it_fails(mesh: Mesh) -> None:
    mesh.start(
        {
            "outlierDetection": {
                "consecutive5xxErrors": 1,
                "interval": "1s",
                "baseEjectionTime": "3m",
                "maxEjectionPercent": 100,
            }
        }
    )
    # Outlier detection alone turns on istiod's default: priorities by closeness to the caller.
    assert mesh.envoy_localities() == {"z-a": (0, 1), "z-b": (1, 1)}
    assert mesh.bodies(30) == Counter({"zone-a": 30})

    mesh.upstreams["zone-a"].status = 500
    # The first 500 ejects zone A's only endpoint: its priority is empty, zone B takes over.
    wait_for(lambda: mesh.get() == (200, "zone-b"), timeout=15, what="failover to zone B")
    assert mesh.bodies(30) == Counter({"zone-b": 30})
    stats = mesh.envoy.stats()  # type: ignore[union-attr]
    assert stats.get(f"cluster.{mesh.cluster}.outlier_detection.ejections_enforced_total", 0) >= 1

    # The failed zone-A pod is replaced (an EndpointSlice change only: the fast path). The new
    # endpoint reaches the caller's locality variant with priority 0 and traffic comes home.
    a2 = mesh.upstream("zone-a-2")
    mesh_yaml.write(
        mesh.config / "backend-1.yaml",
        slice_of("backend-1", mesh.target, [(a2, "z-a"), (mesh.addresses["zone-b"], "z-b")]),
    )
    wait_for(
        lambda: f"{a2}:{mesh.target}" in mesh.envoy.cluster_endpoints(mesh.cluster),  # type: ignore[union-attr]
        what="the new zone-A endpoint in envoy",
    )
    status = mesh.push_status()
    assert status["full"] is False and status["eds_clusters"] == [mesh.cluster], status
    wait_for(lambda: mesh.get() == (200, "zone-a-2"), timeout=15, what="back to zone A")
    assert mesh.bodies(30) == Counter({"zone-a-2": 30})


def test_distribute_weights_are_honoured(mesh: Mesh) -> None:
    mesh.start(
        {
            "loadBalancer": {
                "simple": "ROUND_ROBIN",
                "localityLbSetting": {
                    "distribute": [
                        {
                            "from": f"{REGION}/z-a/*",
                            "to": {f"{REGION}/z-a": 10, f"{REGION}/z-b": 90},
                        }
                    ]
                },
            }
        }
    )
    assert mesh.envoy_localities() == {"z-a": (0, 10), "z-b": (0, 90)}
    found = mesh.bodies(100)
    # Without locality weighting Envoy would split by host (50/50); with it, 10/90.
    assert found["zone-b"] >= 80 and found["zone-a"] <= 20, found
    assert sum(found.values()) == 100
