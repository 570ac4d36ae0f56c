"""VirtualService delegation through a real Envoy: a root VirtualService (namespace shop) hands
`/api` to a delegate owned by namespace team; requests land where the delegate says, editing only
the delegate's file reroutes them, and a delegate that goes away drops just that route."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from istiolite.demo.echo import EchoServer
from tests.support import mesh
from tests.support.net import free_port, loopback_ip
from tests.support.processes import (
    EnvoyProcess,
    IstioliteProcess,
    http_get,
    start_sidecar_mesh,
    stop_all,
)
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

ROOT_NS, TEAM_NS = "shop", "team"
ROOT_FILE, DELEGATE_FILE = "root-routes.yaml", "api-routes.yaml"


@dataclass
class Mesh:
    config: Path
    port: int  # every service's port: one outbound listener on 127.0.0.1
    target: int
    upstreams: list[EchoServer] = field(default_factory=list)
    istiolite: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None

    def get(self, path: str, host: str = "web") -> tuple[int, str, str]:
        """(status, upstream that answered, path it saw) for one request through Envoy."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path, headers={"Host": host})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
        finally:
            conn.close()
        if resp.status == 200 and body.startswith("{"):
            data = json.loads(body)
            return resp.status, data["server"], data["path"]
        return resp.status, "", body

    def server(self, path: str) -> str:
        return self.get(path)[1]

    def workload(self, name: str, namespace: str, labels: dict[str, str]) -> tuple[Any, str]:
        ip = loopback_ip()
        self.upstreams.append(EchoServer(ip, self.target, name).start())
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": self.target}]}]},
            "status": {"podIP": ip},
        }
        return pod, ip

    def service(self, name: str, namespace: str, versions: list[str]) -> list[dict[str, Any]]:
        pods = [
            self.workload(f"{name}-{v}", namespace, {"app": name, "version": v}) for v in versions
        ]
        slice_ = mesh.endpoint_slice(name, namespace, self.target, [ip for _, ip in pods])
        for endpoint, (pod, _) in zip(slice_["endpoints"], pods, strict=True):
            endpoint["targetRef"] = {
                "kind": "Pod",
                "namespace": namespace,
                "name": pod["metadata"]["name"],
            }
        return [
            mesh.service(name, namespace, self.port, target_port=self.target),
            *[pod for pod, _ in pods],
            slice_,
        ]

    def warnings(self) -> list[dict[str, Any]]:
        assert self.istiolite is not None
        status, body = http_get(f"http://127.0.0.1:{self.istiolite.http_port}/debug/configz")
        assert status == 200, body
        return [w for w in json.loads(body)["warnings"] if "VirtualService" in w["object"]]


def virtual_service(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


ROOT = virtual_service(
    "web",
    ROOT_NS,
    {
        "hosts": ["web"],
        "http": [
            {
                "name": "api",
                "match": [{"uri": {"prefix": "/api"}}],
                "delegate": {"name": "api-routes", "namespace": TEAM_NS},
            },
            {"name": "default", "route": [{"destination": {"host": "web"}}]},
        ],
    },
)


def delegate(first_prefix: str, first: str, rest: str) -> dict[str, Any]:
    """The team's delegate: `first_prefix` to subset `first`, the rest of /api to `rest`.
    Short hosts are the team's own services."""
    return virtual_service(
        "api-routes",
        TEAM_NS,
        {
            "exportTo": [ROOT_NS],
            "http": [
                {
                    "name": first,
                    "match": [{"uri": {"prefix": first_prefix}}],
                    "route": [{"destination": {"host": "api", "subset": first}}],
                },
                {"name": "rest", "route": [{"destination": {"host": "api", "subset": rest}}]},
            ],
        },
    )


@pytest.fixture
def delegated(tmp_path: Path) -> Iterator[Mesh]:
    config = tmp_path / "config"
    config.mkdir()
    m = Mesh(config, port=free_port(), target=free_port())
    try:
        mesh.write(config / "web.yaml", *m.service("web", ROOT_NS, ["1"]))
        mesh.write(
            config / "api.yaml",
            *m.service("api", TEAM_NS, ["v1", "v2"]),
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "api", "namespace": TEAM_NS},
                "spec": {
                    "host": "api",
                    "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")],
                },
            },
        )
        mesh.write(config / ROOT_FILE, ROOT)
        mesh.write(config / DELEGATE_FILE, delegate("/api/v2", "v2", "v1"))
        m.istiolite, m.envoy = start_sidecar_mesh([config], tmp_path, namespace=ROOT_NS)
        wait_for(lambda: m.server("/api/v2/x") == "api-v2", what="the delegated route")
        yield m
    finally:
        stop_all(m.envoy, m.istiolite)
        for server in m.upstreams:
            server.stop()


def _no_rejections(envoy: EnvoyProcess) -> None:
    rejected = {k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v}
    assert rejected == {}


def test_requests_land_where_the_delegate_in_another_namespace_says(delegated: Mesh) -> None:
    m = delegated
    assert m.envoy is not None
    for _ in range(10):
        assert m.get("/api/v2/items?id=1") == (200, "api-v2", "/api/v2/items?id=1")
        assert m.get("/api/items") == (200, "api-v1", "/api/items")
        assert m.server("/api") == "api-v1"
        assert m.server("/home") == "web-1"  # outside /api: the root's own route
    # Envoy got the merged routes, named root-delegate.
    routes = next(c for c in m.envoy.config_dump()["configs"] if "dynamic_route_configs" in c)
    [config] = [c["route_config"] for c in routes["dynamic_route_configs"]]
    [vhost] = [vh for vh in config["virtual_hosts"] if vh["name"].startswith("web.shop.")]
    assert [r["name"] for r in vhost["routes"]] == ["api-v2", "api-rest", "default"]
    _no_rejections(m.envoy)
    assert m.warnings() == []


def test_editing_only_the_delegate_reroutes_without_touching_the_root(delegated: Mesh) -> None:
    m = delegated
    assert m.envoy is not None
    root_file = m.config / ROOT_FILE
    before = (root_file.read_bytes(), root_file.stat().st_mtime_ns)
    mesh.write(m.config / DELEGATE_FILE, delegate("/api/v1", "v1", "v2"))
    wait_for(lambda: m.server("/api/items") == "api-v2", what="the delegate's new routes")
    for _ in range(10):
        assert m.server("/api/v1/items") == "api-v1"
        assert m.server("/api/v2/items") == "api-v2"
        assert m.server("/api/items") == "api-v2"
        assert m.server("/") == "web-1"
    assert (root_file.read_bytes(), root_file.stat().st_mtime_ns) == before
    _no_rejections(m.envoy)


def test_a_missing_delegate_drops_only_its_route_with_a_warning(delegated: Mesh) -> None:
    m = delegated
    assert m.envoy is not None
    (m.config / DELEGATE_FILE).unlink()
    # /api now falls through to the root's catch-all; nothing else breaks.
    wait_for(lambda: m.server("/api/v2/x") == "web-1", what="the delegated route dropped")
    assert m.server("/other") == "web-1"
    assert m.warnings() == [
        {
            "object": "VirtualService shop/web",
            "field": "spec.http[0].delegate",
            "message": "VirtualService team/api-routes not found; this route is left out",
        }
    ]
    _no_rejections(m.envoy)
    # Back again: routed by the delegate once more, and the warning is gone.
    mesh.write(m.config / DELEGATE_FILE, delegate("/api/v2", "v2", "v1"))
    wait_for(lambda: m.server("/api/v2/x") == "api-v2", what="the delegate restored")
    assert m.warnings() == []
