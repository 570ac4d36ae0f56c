"""Seeing what every proxy has: /debug pages and `istiolite proxy-status` / `proxy-config`
against a real istiolite, a real Envoy, and a simulated proxy that rejects config."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc

from tests.integration.conftest import NAMESPACE, Mesh
from tests.protocol.harness import CDS, EDS, LDS, XdsClient, make_node
from tests.support import mesh
from tests.support.net import free_port
from tests.support.processes import IstioliteProcess, dump_section, http_get
from tests.support.wait import wait_for

ENVOY_NAME = f"client-1.{NAMESPACE}"


def istiolite_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "istiolite.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


def debug(istiolite: IstioliteProcess, page: str) -> Any:
    status, body = http_get(f"http://127.0.0.1:{istiolite.http_port}{page}")
    assert status == 200, (page, status, body)
    return json.loads(body)


def url(istiolite: IstioliteProcess) -> str:
    return f"http://127.0.0.1:{istiolite.http_port}"


def _addresses(assignment: dict[str, Any]) -> set[str]:
    out = set()
    for group in assignment.get("endpoints", []):
        for lb in group.get("lb_endpoints", []):
            sock = lb["endpoint"]["address"]["socket_address"]
            out.add(f"{sock['address']}:{sock['port_value']}")
    return out


# -- a real Envoy that accepted everything ---------------------------------------------------


@pytest.mark.envoy
@pytest.mark.slow
def test_envoy_that_accepted_everything_is_synced(
    running_mesh: Mesh, request: pytest.FixtureRequest
) -> None:
    istiolite, envoy = running_mesh.istiolite, running_mesh.envoy
    assert istiolite is not None and envoy is not None

    def all_synced() -> dict[str, Any] | None:
        entries = [e for e in debug(istiolite, "/debug/syncz") if e["name"] == ENVOY_NAME]
        if len(entries) == 1 and all(
            entries[0]["types"].get(t, {}).get("status") == "SYNCED"
            for t in ("CDS", "EDS", "LDS", "RDS")
        ):
            return entries[0]
        return None

    entry = wait_for(all_synced, what="CDS/EDS/LDS/RDS SYNCED in /debug/syncz")
    assert entry["delta"] is (request.node.callspec.params["running_mesh"] == "delta")
    for state in entry["types"].values():
        assert state["nack"] is None
        assert state["acked_version"] == state["sent_version"]
    result = istiolite_cli("proxy-status", "--istiolite", url(istiolite))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:6] == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS"]
    [row] = [r.split() for r in rows if r.startswith(ENVOY_NAME)]
    assert row[2:6] == ["SYNCED"] * 4
    assert "ERROR" not in result.stdout


def _proxy_config(istiolite: IstioliteProcess, kind: str, proxy: str) -> list[dict[str, Any]]:
    result = istiolite_cli("proxy-config", kind, proxy, "--istiolite", url(istiolite), "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.envoy
@pytest.mark.slow
def test_proxy_config_matches_envoys_own_config_dump(running_mesh: Mesh) -> None:
    istiolite, envoy = running_mesh.istiolite, running_mesh.envoy
    assert istiolite is not None and envoy is not None
    dump = envoy.config_dump()

    clusters = _proxy_config(istiolite, "clusters", ENVOY_NAME)
    envoy_clusters = {c["cluster"]["name"] for c in dump_section(dump, "dynamic_active_clusters")}
    assert {c["name"] for c in clusters} == envoy_clusters
    assert running_mesh.cluster("alpha") in envoy_clusters

    listeners = _proxy_config(istiolite, "listeners", ENVOY_NAME)
    envoy_listeners = {item["name"] for item in dump_section(dump, "dynamic_listeners")}
    assert {item["name"] for item in listeners} == envoy_listeners
    assert f"127.0.0.1_{running_mesh.service_port}" in envoy_listeners

    routes = _proxy_config(istiolite, "routes", ENVOY_NAME)
    envoy_routes = {
        r["route_config"]["name"]: r["route_config"]
        for r in dump_section(dump, "dynamic_route_configs")
    }
    assert {r["name"] for r in routes} == set(envoy_routes)
    for route in routes:
        ours = {vh["name"]: sorted(vh["domains"]) for vh in route["virtual_hosts"]}
        envoy_hosts = envoy_routes[route["name"]]["virtual_hosts"]
        theirs = {vh["name"]: sorted(vh["domains"]) for vh in envoy_hosts}
        assert ours == theirs

    endpoints = _proxy_config(istiolite, "endpoints", ENVOY_NAME)
    envoy_endpoints = {
        e["endpoint_config"]["cluster_name"]: _addresses(e["endpoint_config"])
        for e in dump_section(dump, "dynamic_endpoint_configs")
    }
    # Envoy also lists (empty) assignments of its non-EDS clusters; istiolite sends EDS only.
    eds_clusters = {c["name"] for c in clusters if c.get("type") == "EDS"}
    assert {e["cluster_name"] for e in endpoints} == eds_clusters
    assert {e["cluster_name"]: _addresses(e) for e in endpoints} == {
        name: envoy_endpoints[name] for name in eds_clusters
    }
    alpha_ips = [ip for ip, u in running_mesh.upstreams.items() if u.name.startswith("alpha")]
    alpha = {f"{ip}:{running_mesh.target_port}" for ip in alpha_ips}
    assert envoy_endpoints[running_mesh.cluster("alpha")] == alpha

    # The node id works as well as <pod>.<namespace>, and the table names the same clusters.
    node_id = f"sidecar~127.0.0.1~{ENVOY_NAME}~{NAMESPACE}.svc.cluster.local"
    assert _proxy_config(istiolite, "clusters", node_id) == clusters
    table = istiolite_cli("proxy-config", "clusters", ENVOY_NAME, "--istiolite", url(istiolite))
    assert table.returncode == 0, table.stderr
    assert f"alpha.{NAMESPACE}.svc.cluster.local" in table.stdout
    secrets = istiolite_cli("proxy-config", "secrets", ENVOY_NAME, "--istiolite", url(istiolite))
    # On loopback with the development SDS mode the sidecar holds its own workload certificate
    # (auto mTLS asks for it): the table shows its identity, never a key.
    assert secrets.returncode == 0, secrets.stderr
    assert f"spiffe://cluster.local/ns/{NAMESPACE}/sa/default" in secrets.stdout
    assert "PRIVATE KEY" not in secrets.stdout

    unknown = istiolite_cli("proxy-config", "clusters", "ghost.shop", "--istiolite", url(istiolite))
    assert unknown.returncode == 1
    assert "ghost.shop" in unknown.stderr


# -- the registry and the config, with an invalid object -------------------------------------


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[IstioliteProcess]:
    """istiolite over alpha (two endpoints, one not ready) and a file with a broken Service."""
    config = tmp_path / "config"
    config.mkdir()
    mesh.write(
        config / "alpha.yaml",
        mesh.service("alpha", NAMESPACE, 8000, target_port=9000, cluster_ip="10.96.1.1"),
        mesh.endpoint_slice(
            "alpha", NAMESPACE, 9000, ["127.0.0.31", "127.0.0.32"], not_ready=("127.0.0.32",)
        ),
    )
    mesh.write(config / "broken.yaml", mesh.service("broken", NAMESPACE, 70000))
    istiolite = IstioliteProcess([config], tmp_path)
    try:
        yield istiolite
    finally:
        istiolite.stop()


def test_registryz_and_configz(shop: IstioliteProcess) -> None:
    [alpha] = debug(shop, "/debug/registryz")
    assert alpha["hostname"] == f"alpha.{NAMESPACE}.svc.cluster.local"
    assert alpha["clusterIP"] == "10.96.1.1"
    [port] = alpha["ports"]
    assert (port["name"], port["port"], port["protocol"], port["targetPort"]) == (
        "http",
        8000,
        "HTTP",
        9000,
    )
    assert [(e["address"], e["port"]) for e in port["endpoints"]] == [("127.0.0.31", 9000)]

    configz = debug(shop, "/debug/configz")
    kinds = {(o["kind"], o["name"]) for o in configz["objects"]}
    assert kinds == {("Service", "alpha"), ("EndpointSlice", "alpha-slice")}
    assert all(o["source"].endswith("alpha.yaml") for o in configz["objects"])
    [error] = configz["errors"]
    assert error["file"].endswith("broken.yaml")
    assert error["object"] == f"Service {NAMESPACE}/broken"
    assert error["field"] == "spec.ports[0].port"
    assert "70000" in error["message"]

    status = debug(shop, "/debug/push_status")
    assert status["connected_proxies"] == 0
    assert status["version"]


def test_config_dump_needs_a_known_proxy(shop: IstioliteProcess) -> None:
    base = url(shop)
    assert http_get(base + "/debug/config_dump")[0] == 400
    assert http_get(base + "/debug/config_dump?proxyID=ghost.shop")[0] == 404


def test_cli_reports_an_unreachable_istiolite() -> None:
    result = istiolite_cli("proxy-status", "--istiolite", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach istiolite" in result.stderr


# -- a proxy that rejects config ---------------------------------------------------------------


NACKING_NODE = f"sidecar~127.0.0.1~rejecter-1.{NAMESPACE}~{NAMESPACE}.svc.cluster.local"
REJECTION = "Error adding/updating listener(s) 0.0.0.0_8000: simulated rejection"


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_nack_shows_as_error_in_syncz_and_proxy_status(
    shop: IstioliteProcess, delta: bool
) -> None:
    channel = grpc.aio.insecure_channel(shop.xds_address)
    client = XdsClient(
        ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel),
        delta=delta,
        node=make_node(NACKING_NODE, namespace=NAMESPACE),
    )
    try:
        await client.fetch(CDS)  # ACKed
        await client.fetch(EDS, [f"outbound|8000||alpha.{NAMESPACE}.svc.cluster.local"])
        if delta:
            client.delta_request(LDS)
        else:
            client.request(LDS, [])
        listeners = await client.recv(LDS)
        client.nack(listeners, REJECTION)
        rejected = listeners.system_version_info if delta else listeners.version_info

        def rejected_in_syncz() -> dict[str, Any] | None:
            for entry in debug(shop, "/debug/syncz"):
                lds = entry["types"].get("LDS", {})
                if entry["proxy"] == NACKING_NODE and lds.get("status") == "ERROR":
                    return entry
            return None

        entry = await asyncio.to_thread(wait_for, rejected_in_syncz, what="LDS ERROR in syncz")
        assert entry["delta"] is delta
        assert entry["name"] == f"rejecter-1.{NAMESPACE}"
        lds = entry["types"]["LDS"]
        assert lds["nack"]["message"] == REJECTION
        assert lds["nack"]["rejected_version"] == rejected
        assert lds["nack"]["nonce"] == listeners.nonce
        assert entry["types"]["CDS"]["status"] == "SYNCED"
        assert entry["types"]["EDS"]["status"] == "SYNCED"

        result = await asyncio.to_thread(istiolite_cli, "proxy-status", "--istiolite", url(shop))
        assert result.returncode == 0, result.stderr
        table = result.stdout.split("\n\n")[0]
        [row] = [r.split() for r in table.splitlines() if r.startswith("rejecter-1")]
        assert row[2:6] == ["SYNCED", "ERROR", "SYNCED", "IGNORED"]
        assert f"rejecter-1.{NAMESPACE} LDS rejected version {rejected}: {REJECTION}" in (
            result.stdout
        )
    finally:
        await client.aclose()
        await channel.close()
