"""ServiceEntry through a real Envoy: STATIC endpoints, and DNS resolution (of localhost)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from istiolite.demo.echo import EchoServer
from tests.support.net import free_port, http_request, loopback_ip
from tests.support.processes import start_sidecar_mesh, stop_all
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def _entry(name: str, host: str, port: int, resolution: str, endpoints: list[dict]) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "hosts": [host],
            "location": "MESH_EXTERNAL",
            "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
            "resolution": resolution,
            "endpoints": endpoints,
        },
    }


def _get(port: int, host: str) -> tuple[int, str]:
    reply = http_request("127.0.0.1", port, host)
    return reply.status, reply.json()["server"] if reply.status == 200 else reply.body


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_static_and_dns_service_entries_route_real_traffic(tmp_path: Path, delta: bool) -> None:
    port, static_target, dns_target = free_port(), free_port(), free_port()
    static_ips = [loopback_ip(), loopback_ip()]
    servers = [
        EchoServer(ip, static_target, f"static-{i}").start() for i, ip in enumerate(static_ips)
    ]
    # DNS: the endpoint is a name Envoy resolves; localhost is the one name resolvable here.
    servers.append(EchoServer("127.0.0.1", dns_target, "dns-0").start())
    config = tmp_path / "config"
    config.mkdir()
    (config / "entries.yaml").write_text(
        yaml.safe_dump_all(
            [
                _entry(
                    "static",
                    "api.partner.example",
                    port,
                    "STATIC",
                    [{"address": ip, "ports": {"http": static_target}} for ip in static_ips],
                ),
                _entry(
                    "dns",
                    "db.partner.example",
                    port,
                    "DNS",
                    [{"address": "localhost", "ports": {"http": dns_target}}],
                ),
            ]
        )
    )
    cp = envoy = None
    try:
        cp, envoy = start_sidecar_mesh([config], tmp_path, namespace="default", delta=delta)
        wait_for(lambda: _get(port, "api.partner.example")[0] == 200, what="static entry")
        seen = {_get(port, "api.partner.example")[1] for _ in range(30)}
        assert seen == {"static-0", "static-1"}
        wait_for(lambda: _get(port, "db.partner.example") == (200, "dns-0"), what="dns entry")
        assert _get(port, f"db.partner.example:{port}") == (200, "dns-0")
        assert _get(port, "unknown.partner.example")[0] == 502
    finally:
        stop_all(envoy, cp)
        for server in servers:
            server.stop()


def _workload(name: str, ip: str, port: int, app: str) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"address": ip, "ports": {"http": port}, "labels": {"app": app}},
    }


def test_workload_selector_picks_workload_entries(tmp_path: Path) -> None:
    port, target = free_port(), free_port()
    ips = [loopback_ip() for _ in range(3)]
    servers = [EchoServer(ip, target, f"vm-{i}").start() for i, ip in enumerate(ips)]
    config = tmp_path / "config"
    config.mkdir()
    entry = _entry("legacy", "legacy.partner.example", port, "STATIC", [])
    entry["spec"].pop("endpoints")
    entry["spec"]["workloadSelector"] = {"labels": {"app": "legacy"}}
    (config / "entry.yaml").write_text(yaml.safe_dump(entry))
    for i, app in enumerate(("legacy", "legacy", "other")):
        (config / f"vm-{i}.yaml").write_text(
            yaml.safe_dump(_workload(f"vm-{i}", ips[i], target, app))
        )
    cp = envoy = None
    try:
        cp, envoy = start_sidecar_mesh([config], tmp_path, namespace="default", delta=True)
        wait_for(lambda: _get(port, "legacy.partner.example")[0] == 200, what="entry routable")
        # Only the selected workloads: vm-2 carries another app label.
        assert {_get(port, "legacy.partner.example")[1] for _ in range(30)} == {"vm-0", "vm-1"}
        (config / "vm-1.yaml").unlink()
        wait_for(
            lambda: {_get(port, "legacy.partner.example")[1] for _ in range(10)} == {"vm-0"},
            what="vm-1 gone",
        )
    finally:
        stop_all(envoy, cp)
        for server in servers:
            server.stop()
