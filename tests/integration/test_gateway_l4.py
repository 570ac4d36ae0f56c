"""Gateway servers below HTTP through a real Envoy `router`: TLS PASSTHROUGH routed by SNI with
VirtualService tls[] routes (the client verifies the upstream's own certificate end to end), and
plain TCP with tcp[] routes."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support import mesh
from tests.support.certs import CertificateAuthority, client_context, server_context
from tests.support.net import free_port
from tests.support.processes import EnvoyProcess, start_gateway_mesh, stop_all
from tests.support.upstream import EchoServer

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
GW_NS = "istio-system"


@dataclass
class L4Mesh:
    envoy: EnvoyProcess
    ca: CertificateAuthority
    tls_port: int
    tcp_port: int


def _objects(tls_port: int, tcp_port: int) -> list[dict[str, Any]]:
    gateway = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": GW_NS},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {
                    "port": {"number": tls_port, "name": "tls", "protocol": "TLS"},
                    "hosts": ["*.example.com"],
                    "tls": {"mode": "PASSTHROUGH"},
                },
                {
                    "port": {"number": tcp_port, "name": "tcp", "protocol": "TCP"},
                    "hosts": ["*"],
                },
            ],
        },
    }
    passthrough = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "secure", "namespace": "apps"},
        "spec": {
            "hosts": ["alpha.example.com", "beta.example.com"],
            "gateways": [f"{GW_NS}/edge"],
            "tls": [
                {
                    "match": [{"sniHosts": ["alpha.example.com"]}],
                    "route": [{"destination": {"host": "alpha", "port": {"number": 443}}}],
                },
                {
                    "match": [{"sniHosts": ["beta.example.com"], "port": tls_port}],
                    "route": [{"destination": {"host": "beta", "port": {"number": 443}}}],
                },
            ],
        },
    }
    tcp = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "raw", "namespace": "apps"},
        "spec": {
            "hosts": ["*"],
            "gateways": [f"{GW_NS}/edge"],
            "tcp": [{"route": [{"destination": {"host": "echo", "port": {"number": 9000}}}]}],
        },
    }
    return [gateway, passthrough, tcp]


@pytest.fixture(params=[False, True], ids=["sotw", "delta"])
def l4_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[L4Mesh]:
    ca = CertificateAuthority("upstream CA")
    servers: list[EchoServer] = []
    for name in ("alpha", "beta"):
        pair = ca.issue(f"{name}.example.com", dns=(f"{name}.example.com",))
        servers.append(EchoServer(name, server_context(pair)))
    servers.append(EchoServer("echo"))
    alpha, beta, echo = servers
    config = tmp_path / "config"
    config.mkdir()
    mesh.write(
        config / "services.yaml",
        mesh.service("alpha", "apps", 443, target_port=alpha.port, port_name="tls"),
        mesh.endpoint_slice("alpha", "apps", alpha.port, ["127.0.0.1"], port_name="tls"),
        mesh.service("beta", "apps", 443, target_port=beta.port, port_name="tls"),
        mesh.endpoint_slice("beta", "apps", beta.port, ["127.0.0.1"], port_name="tls"),
        mesh.service("echo", "apps", 9000, target_port=echo.port, port_name="tcp"),
        mesh.endpoint_slice("echo", "apps", echo.port, ["127.0.0.1"], port_name="tcp"),
    )
    tls_port, tcp_port = free_port(), free_port()
    mesh.write(config / "gateway.yaml", *_objects(tls_port, tcp_port))
    cp = envoy = None
    try:
        cp, envoy = start_gateway_mesh([config], tmp_path, namespace=GW_NS, delta=request.param)
        yield L4Mesh(envoy, ca, tls_port, tcp_port)
    finally:
        stop_all(envoy, cp)
        for server in servers:
            server.stop()


def _tls_exchange(port: int, sni: str, ca: CertificateAuthority) -> tuple[bytes, x509.Certificate]:
    ctx = client_context(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as sock:
            der = sock.getpeercert(binary_form=True)
            assert der is not None
            sock.sendall(b"hello")
            return sock.recv(4096), x509.load_der_x509_certificate(der)


def test_passthrough_routes_by_sni_to_the_upstream_that_terminates(l4_mesh: L4Mesh) -> None:
    for name in ("alpha", "beta"):
        reply, cert = _tls_exchange(l4_mesh.tls_port, f"{name}.example.com", l4_mesh.ca)
        # The upstream itself terminated TLS: its certificate, its answer.
        assert reply == f"{name}:hello".encode()
        assert cert.subject.rfc4514_string() == f"CN={name}.example.com"
    # An SNI no tls[] route names matches no filter chain: Envoy closes the connection.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _tls_exchange(l4_mesh.tls_port, "gamma.example.com", l4_mesh.ca)


def test_tcp_server_proxies_to_the_tcp_route(l4_mesh: L4Mesh) -> None:
    with socket.create_connection(("127.0.0.1", l4_mesh.tcp_port), timeout=5) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4096) == b"echo:ping"
    stats = l4_mesh.envoy.stats()
    assert stats["cluster.outbound|9000||echo.apps.svc.cluster.local.upstream_cx_total"] >= 1
