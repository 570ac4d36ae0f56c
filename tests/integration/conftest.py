"""A running mesh for integration tests: istiolite, a real Envoy, echo upstreams."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from istiolite.demo.echo import EchoServer
from tests.support import mesh
from tests.support.net import free_port, http_request, loopback_ip
from tests.support.processes import EnvoyProcess, IstioliteProcess, start_sidecar_mesh, stop_all
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
        reply = http_request("127.0.0.1", port or self.service_port, host, path)
        if reply.status == 200 and reply.body.startswith("{"):
            return reply.status, reply.json()["server"]
        return reply.status, reply.body

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
        m.istiolite, m.envoy = start_sidecar_mesh(
            [config_dir],
            tmp_path,
            namespace=NAMESPACE,
            delta=request.param == "delta",
            labels={"app": "client"},
        )
        wait_for(lambda: m.request("alpha")[0] == 200, what="first request through envoy")
        yield m
    finally:
        stop_all(m.envoy, m.istiolite)
        for server in m.upstreams.values():
            server.stop()
