"""`istiolite serve --mesh-config FILE` as a process: the file's outboundTrafficPolicy reaches a
connected sidecar, an edit of the file is pushed on the open stream, the file's trustDomain is
used unless --trust-domain is given, and an unusable file stops serve naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from tests.support import mesh
from tests.support.pilot_agent import LDS, DeltaAds, Pod, envoy_node
from tests.support.processes import IstioliteProcess
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow]


def _catchall(response: object) -> str | None:
    """Where virtualOutbound sends unknown destinations, if this LDS response carries it."""
    for resource in response.resources:  # type: ignore[attr-defined]
        if resource.name != "virtualOutbound":
            continue
        listener = Listener()
        resource.resource.Unpack(listener)
        for chain in listener.filter_chains:
            if chain.name == "virtualOutbound-catchall-tcp":
                proxied = tcp_proxy_pb2.TcpProxy()
                chain.filters[0].typed_config.Unpack(proxied)
                return str(proxied.cluster)
    return None


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    config.mkdir()
    mesh.write(config / "web.yaml", mesh.service("web", "shop", 80))
    return config


def test_outbound_policy_from_the_file_and_its_edit_pushed(
    tmp_path: Path, config_dir: Path
) -> None:
    mesh_dir = tmp_path / "istio-config"
    mesh_dir.mkdir()
    mesh_file = mesh_dir / "mesh"
    mesh_file.write_text("outboundTrafficPolicy:\n  mode: ALLOW_ANY\n")
    istiolite = IstioliteProcess([config_dir], tmp_path, "--mesh-config", str(mesh_file))
    pod = Pod(name="client-1", namespace="shop", service_account="client", ip="10.244.0.9")
    stream = DeltaAds(
        grpc.insecure_channel(istiolite.xds_address), envoy_node(pod), [], agent_types=[]
    )
    try:
        stream.subscribe(LDS)
        first = stream.recv(LDS)
        stream.ack(first)
        assert _catchall(first) == "PassthroughCluster"

        mesh_file.write_text("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n")

        def blocked() -> bool:
            response = stream.recv(LDS, timeout=1)
            stream.ack(response)
            return _catchall(response) == "BlackHoleCluster"

        wait_for(blocked, timeout=30, what="REGISTRY_ONLY pushed to the open stream")
        assert stream.closed is None
        events = [e for e in istiolite.log_events() if e.get("event") == "mesh config reloaded"]
        assert events and events[-1]["outbound_traffic_policy"] == "REGISTRY_ONLY"
    finally:
        stream.close()
        istiolite.stop()


@pytest.mark.parametrize(
    ("flag", "expected"),
    [([], "example.org"), (["--trust-domain", "flag.example"], "flag.example")],
)
def test_trust_domain_from_the_file_unless_the_flag_is_given(
    tmp_path: Path, config_dir: Path, flag: list[str], expected: str
) -> None:
    mesh_file = tmp_path / "mesh"
    mesh_file.write_text("trustDomain: example.org\n")
    istiolite = IstioliteProcess([config_dir], tmp_path, "--mesh-config", str(mesh_file), *flag)
    try:
        (serving,) = [e for e in istiolite.log_events() if e.get("event") == "serving"]
        assert serving["trust_domain"] == expected
    finally:
        istiolite.stop()


def test_an_unusable_file_stops_serve_naming_the_field(tmp_path: Path, config_dir: Path) -> None:
    mesh_file = tmp_path / "mesh"
    mesh_file.write_text("outboundTrafficPolicy:\n  mode: DENY_ALL\n")
    result = subprocess.run(
        [sys.executable, "-m", "istiolite.cli", "serve", "--config-dir", str(config_dir),
         "--mesh-config", str(mesh_file), "--grpc-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0",
         "--secure-grpc-addr", "off", "--webhook-addr", "off"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{mesh_file}: outboundTrafficPolicy.mode: 'DENY_ALL'" in result.stderr
    assert "Traceback" not in result.stderr
