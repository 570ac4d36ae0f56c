"""exportTo through real Envoys: a Service exported to `.` reaches only proxies of its own
namespace, and a VirtualService exported to `.` reroutes traffic only there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from istiolite.demo.echo import EchoServer
from istiolite.model.visibility import EXPORT_TO_ANNOTATION
from tests.support import mesh
from tests.support.net import free_port, http_request, loopback_ip
from tests.support.processes import (
    EnvoyProcess,
    IstioliteProcess,
    dump_section,
    sidecar_envoy,
    stop_all,
)
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def _answer(port: int, host: str) -> str:
    """The upstream that answered a GET through the proxy's listener on 127.0.0.1:port."""
    reply = http_request("127.0.0.1", port, host)
    return reply.json()["server"] if reply.status == 200 else f"HTTP {reply.status}"


def _listeners(envoy: EnvoyProcess) -> set[str]:
    listeners = dump_section(envoy.config_dump(), "dynamic_listeners")
    assert not any("error_state" in item for item in listeners)
    return {item["name"] for item in listeners}


def test_export_to_scopes_clusters_and_routing_by_namespace(tmp_path: Path) -> None:
    web_port, canary_port, private_port = free_port(), free_port(), free_port()
    upstreams = {name: (loopback_ip(), free_port()) for name in ("web", "canary", "private")}
    private = mesh.service("private", "team-b", private_port, target_port=upstreams["private"][1])
    private["metadata"]["annotations"] = {EXPORT_TO_ANNOTATION: "."}
    canary_route: dict[str, Any] = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web-canary", "namespace": "team-b"},
        "spec": {
            "hosts": ["web"],
            "exportTo": ["."],
            "http": [{"route": [{"destination": {"host": "web-canary"}}]}],
        },
    }
    config = tmp_path / "config"
    config.mkdir()
    mesh.write(
        config / "mesh.yaml",
        mesh.service("web", "team-b", web_port, target_port=upstreams["web"][1]),
        mesh.endpoint_slice("web", "team-b", upstreams["web"][1], [upstreams["web"][0]]),
        mesh.service("web-canary", "team-b", canary_port, target_port=upstreams["canary"][1]),
        mesh.endpoint_slice(
            "web-canary", "team-b", upstreams["canary"][1], [upstreams["canary"][0]]
        ),
        private,
        mesh.endpoint_slice(
            "private", "team-b", upstreams["private"][1], [upstreams["private"][0]]
        ),
        canary_route,
    )
    private_cluster = f"outbound|{private_port}||private.team-b.svc.cluster.local"
    servers: list[EchoServer] = []
    cp: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None
    try:
        for name, (ip, port) in upstreams.items():
            servers.append(EchoServer(ip, port, f"{name}-0").start())
        cp = IstioliteProcess([config], tmp_path)
        seen: dict[str, set[str]] = {}
        # One proxy at a time: without iptables both would bind the same 127.0.0.1 ports.
        for namespace, web_answer in (("team-a", "web-0"), ("team-b", "canary-0")):
            envoy = sidecar_envoy(cp, tmp_path, namespace=namespace)
            seen[namespace] = envoy.cluster_names("outbound|")
            # The VirtualService exported to "." decides only team-b's routing.
            wait_for(
                lambda expected=web_answer: _answer(web_port, "web.team-b") == expected,
                what=f"web from {namespace} answered by {web_answer}",
            )
            assert {_answer(web_port, "web.team-b.svc.cluster.local") for _ in range(5)} == {
                web_answer
            }
            listeners = _listeners(envoy)
            if namespace == "team-b":
                assert f"127.0.0.1_{private_port}" in listeners
                assert _answer(private_port, "private.team-b") == "private-0"
            else:
                # Nothing of the private service: no listener on its port, so no connection.
                assert f"127.0.0.1_{private_port}" not in listeners
                with pytest.raises(ConnectionRefusedError):
                    _answer(private_port, "private.team-b")
            rejected = {
                k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v
            }
            assert rejected == {}
            envoy.stop()
            envoy = None
        assert sum(1 for c in seen["team-a"] if "private.team-b" in c) == 0
        assert sum(1 for c in seen["team-b"] if "private.team-b" in c) == 1
        assert private_cluster in seen["team-b"]
        # Everything else is shared: the two proxies differ only by the private service.
        assert seen["team-b"] - seen["team-a"] == {private_cluster}
        assert seen["team-a"] <= seen["team-b"]
    finally:
        stop_all(envoy, cp)
        for server in servers:
            server.stop()
