"""A running mesh for integration tests: istiolite, a real Envoy, echo upstreams."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from istiolite.demo.echo import EchoServer
from tests.support import mesh
from tests.support.net import free_port, loopback_ip
from tests.support.processes import EnvoyProcess, IstioliteProcess, stop_all
from tests.support.wait import wait_for

NAMESPACE = "shop"


@dataclass
class Mesh:
    config_dir: Path
    workdir: Path
    service_port: int
    target_port: int
    istiolite: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None
    upstreams: dict[str, EchoServer] = field(default_factory=dict)

    def start_upstream(self, name: str) -> str:
        ip = loopback_ip()
        self.upstreams[ip] = EchoServer(ip, self.target_port, name).start()
        return ip

    def request(self, host: str, path: str = "/", port: int | None = None) -> tuple[int, str]:
        """One request through Envoy's outbound listener: (status, upstream name or body)."""
        conn = http.client.HTTPConnection("127.0.0.1", port or self.service_port, timeout=5)
        try:
            conn.request("GET", path, headers={"Host": host})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
        finally:
            conn.close()
        if resp.status == 200 and body.startswith("{"):
            return resp.status, json.loads(body)["server"]
        return resp.status, body

    def cluster(self, service: str) -> str:
        return f"outbound|{self.service_port}||{service}.{NAMESPACE}.svc.cluster.local"


@pytest.fixture(params=["sotw", "delta"])
def running_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mesh]:
    """alpha (3 pods) and beta (1 pod) on one HTTP port; a sidecar Envoy without iptables."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    m = Mesh(config_dir, tmp_path, service_port=free_port(), target_port=free_port())
    try:
        alpha_ips = [m.start_upstream(f"alpha-{i}") for i in range(3)]
        beta_ips = [m.start_upstream("beta-0")]
        mesh.write(
            config_dir / "alpha.yaml",
            mesh.service("alpha", NAMESPACE, m.service_port, target_port=m.target_port),
            mesh.endpoint_slice("alpha", NAMESPACE, m.target_port, alpha_ips),
        )
        mesh.write(
            config_dir / "beta.yaml",
            mesh.service("beta", NAMESPACE, m.service_port, target_port=m.target_port),
            mesh.endpoint_slice("beta", NAMESPACE, m.target_port, beta_ips),
        )
        m.istiolite = IstioliteProcess([config_dir], tmp_path)
        m.envoy = EnvoyProcess(
            tmp_path,
            m.istiolite.xds_address,
            f"sidecar~127.0.0.1~client-1.{NAMESPACE}~{NAMESPACE}.svc.cluster.local",
            delta=request.param == "delta",
            meta={"NAMESPACE": NAMESPACE, "INTERCEPTION_MODE": "NONE"},
            labels={"app": "client"},
        )
        wait_for(m.envoy.synced, what="envoy synced")
        wait_for(lambda: m.request("alpha")[0] == 200, what="first request through envoy")
        yield m
    finally:
        stop_all(m.envoy, m.istiolite)
        for server in m.upstreams.values():
            server.stop()
