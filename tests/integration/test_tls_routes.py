"""VirtualService tls[] routes on a sidecar through a real Envoy: unterminated TLS to one service
port is sent on by the SNI of the client hello; other names keep going to the service itself.
The client verifies each upstream's own certificate, so the bytes were never opened on the way."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import mesh
from tests.support.certs import CertificateAuthority, client_context, server_context
from tests.support.net import free_port
from tests.support.processes import EnvoyProcess, IstioliteProcess, start_sidecar_mesh, stop_all
from tests.support.upstream import EchoServer

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NS = "apps"


@dataclass
class TlsMesh:
    envoy: EnvoyProcess
    ca: CertificateAuthority
    ports: dict[str, int]  # service port by name


def _routes() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "front", "namespace": NS},
        "spec": {
            "hosts": ["front", "*.example.com"],
            "tls": [
                {
                    "match": [{"sniHosts": ["alpha.example.com"]}],
                    "route": [{"destination": {"host": "alpha"}}],
                },
                {
                    "match": [{"sniHosts": ["beta.example.com", "b.example.com"]}],
                    "route": [{"destination": {"host": "beta"}}],
                },
            ],
        },
    }


@pytest.fixture(params=[False, True], ids=["sotw", "delta"])
def tls_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TlsMesh]:
    ca = CertificateAuthority("tls routes CA")
    servers: dict[str, EchoServer] = {}
    for name in ("front", "alpha", "beta"):
        dns = (f"{name}.example.com", f"{name[0]}.example.com")
        servers[name] = EchoServer(name, server_context(ca.issue(dns[0], dns=dns)))
    config = tmp_path / "config"
    config.mkdir()
    ports = {"front": free_port(), "alpha": free_port(), "beta": free_port()}
    objects = []
    for name, server in servers.items():
        objects += [
            mesh.service(name, NS, ports[name], target_port=server.port, port_name="tls"),
            mesh.endpoint_slice(name, NS, server.port, ["127.0.0.1"], port_name="tls"),
        ]
    mesh.write(config / "services.yaml", *objects)
    mesh.write(config / "routes.yaml", _routes())
    cp: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None
    try:
        cp, envoy = start_sidecar_mesh([config], tmp_path, namespace=NS, delta=request.param)
        yield TlsMesh(envoy, ca, ports)
    finally:
        stop_all(envoy, cp)
        for server in servers.values():
            server.stop()


def _exchange(port: int, sni: str, ca: CertificateAuthority) -> bytes:
    ctx = client_context(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as sock:
            sock.sendall(b"hi")
            return sock.recv(4096)


def test_sni_picks_the_upstream_and_other_names_reach_the_service(tls_mesh: TlsMesh) -> None:
    port = tls_mesh.ports["front"]
    assert _exchange(port, "alpha.example.com", tls_mesh.ca) == b"alpha:hi"
    assert _exchange(port, "b.example.com", tls_mesh.ca) == b"beta:hi"
    assert _exchange(port, "front.example.com", tls_mesh.ca) == b"front:hi"
    stats = tls_mesh.envoy.stats()
    for name in ("alpha", "beta", "front"):
        cluster = f"outbound|{tls_mesh.ports[name]}||{name}.{NS}.svc.cluster.local"
        assert stats[f"cluster.{cluster}.upstream_cx_total"] == 1, cluster
