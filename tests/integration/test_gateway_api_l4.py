"""Gateway API listeners beyond plain HTTP through a real Envoy router: HTTPS terminated with a
Secret of the Gateway's namespace, and with a Secret of another namespace that a ReferenceGrant
there allows (refused without one: that listener is not served; withdrawn when the grant goes),
TLS passthrough by SNI (TLSRoute) and TCPRoute."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support import mesh
from tests.support.certs import CertificateAuthority, client_context, server_context, tls_secret
from tests.support.net import free_port
from tests.support.processes import EnvoyProcess, IstioliteProcess, start_gateway_mesh, stop_all
from tests.support.upstream import BehaviourServer, EchoServer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NS = "edge"
GW = "gateway.networking.k8s.io"


@dataclass
class Edge:
    cp: IstioliteProcess
    envoy: EnvoyProcess
    ca: CertificateAuthority
    https: int
    cross: int
    granted: int
    grant_file: Path
    tls: int
    tcp: int


def _listener(name: str, port: int, protocol: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "port": port,
        "protocol": protocol,
        "allowedRoutes": {"namespaces": {"from": "All"}},
        **extra,
    }


def _route(kind: str, name: str, section: str, backend: str, port: int, **spec: Any) -> dict:
    version = "v1" if kind == "HTTPRoute" else "v1alpha2"
    return {
        "apiVersion": f"{GW}/{version}",
        "kind": kind,
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {
            "parentRefs": [{"name": "edge", "namespace": NS, "sectionName": section}],
            "rules": [{"backendRefs": [{"name": backend, "port": port}]}],
            **spec,
        },
    }


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    ca = CertificateAuthority("edge CA")
    web = BehaviourServer("127.0.0.1", free_port(), "web").start()
    alpha = EchoServer(
        "alpha", server_context(ca.issue("alpha.example.com", dns=("alpha.example.com",)))
    )
    echo = EchoServer("echo")
    config = tmp_path / "config"
    config.mkdir()
    mesh.write(
        config / "services.yaml",
        mesh.service("web", "apps", 80, target_port=web.port),
        mesh.endpoint_slice("web", "apps", web.port, ["127.0.0.1"]),
        mesh.service("alpha", "apps", 443, target_port=alpha.port, port_name="tls"),
        mesh.endpoint_slice("alpha", "apps", alpha.port, ["127.0.0.1"], port_name="tls"),
        mesh.service("echo", "apps", 9000, target_port=echo.port, port_name="tcp"),
        mesh.endpoint_slice("echo", "apps", echo.port, ["127.0.0.1"], port_name="tcp"),
    )
    pair = ca.issue("secure.example.com", dns=("secure.example.com",))
    shared = ca.issue("shared.example.com", dns=("shared.example.com",))
    mesh.write(
        config / "secrets.yaml",
        tls_secret("edge-cert", NS, pair),
        tls_secret("apps-cert", "apps", pair),
        tls_secret("shared-cert", "certs", shared),
    )
    # Gateways of NS may use Secret certs/shared-cert (and nothing else of certs or apps).
    grant_file = config / "grant.yaml"
    mesh.write(
        grant_file,
        {
            "apiVersion": f"{GW}/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "edge-gateways", "namespace": "certs"},
            "spec": {
                "from": [{"group": GW, "kind": "Gateway", "namespace": NS}],
                "to": [{"group": "", "kind": "Secret", "name": "shared-cert"}],
            },
        },
    )
    https, cross, granted, tls, tcp = (free_port() for _ in range(5))
    gateway = {
        "apiVersion": f"{GW}/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": NS},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                _listener(
                    "https",
                    https,
                    "HTTPS",
                    hostname="secure.example.com",
                    tls={"certificateRefs": [{"name": "edge-cert"}]},
                ),
                _listener(
                    "cross",
                    cross,
                    "HTTPS",
                    hostname="secure.example.com",
                    tls={"certificateRefs": [{"name": "apps-cert", "namespace": "apps"}]},
                ),
                _listener(
                    "granted",
                    granted,
                    "HTTPS",
                    hostname="shared.example.com",
                    tls={"certificateRefs": [{"name": "shared-cert", "namespace": "certs"}]},
                ),
                _listener("tls", tls, "TLS", tls={"mode": "Passthrough"}),
                _listener("tcp", tcp, "TCP"),
            ],
        },
    }
    mesh.write(
        config / "gateway.yaml",
        gateway,
        _route("HTTPRoute", "web", "https", "web", 80),
        _route("HTTPRoute", "web-cross", "cross", "web", 80),
        _route("HTTPRoute", "web-granted", "granted", "web", 80),
        _route("TLSRoute", "alpha", "tls", "alpha", 443, hostnames=["alpha.example.com"]),
        _route("TCPRoute", "echo", "tcp", "echo", 9000),
    )
    cp = envoy = None
    try:
        cp, envoy = start_gateway_mesh(
            [config],
            tmp_path,
            namespace=NS,
            labels={"gateway.networking.k8s.io/gateway-name": "edge"},
            delta=True,
        )
        yield Edge(cp, envoy, ca, https, cross, granted, grant_file, tls, tcp)
    finally:
        stop_all(envoy, cp)
        for server in (alpha, echo):
            server.stop()
        web.stop()


def _tls(
    port: int, sni: str, ca: CertificateAuthority, data: bytes
) -> tuple[bytes, x509.Certificate]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client_context(ca).wrap_socket(raw, server_hostname=sni) as sock:
            der = sock.getpeercert(binary_form=True)
            assert der is not None
            sock.sendall(data)
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
                if not data.startswith(b"GET"):
                    break
            return out, x509.load_der_x509_certificate(der)


def test_https_terminated_with_the_gateways_secret(edge: Edge) -> None:
    request = b"GET /hi HTTP/1.1\r\nHost: secure.example.com\r\nConnection: close\r\n\r\n"
    reply, cert = _tls(edge.https, "secure.example.com", edge.ca, request)
    assert reply.startswith(b"HTTP/1.1 200")
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["server"] == "web"
    assert cert.subject.rfc4514_string() == "CN=secure.example.com"


def test_certificate_of_another_namespace_without_a_grant_is_not_served(edge: Edge) -> None:
    listeners = json.dumps(edge.envoy.config_dump("dynamic_listeners"))
    assert f"0.0.0.0_{edge.https}" in listeners
    assert f"0.0.0.0_{edge.cross}" not in listeners
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _tls(edge.cross, "secure.example.com", edge.ca, b"GET / HTTP/1.1\r\n\r\n")


def _get(edge: Edge, port: int, host: str) -> tuple[bytes, x509.Certificate]:
    request = f"GET /hi HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    return _tls(port, host, edge.ca, request)


def test_certificate_of_another_namespace_with_a_grant_is_served(edge: Edge) -> None:
    reply, cert = _get(edge, edge.granted, "shared.example.com")
    assert reply.startswith(b"HTTP/1.1 200")
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["server"] == "web"
    assert cert.subject.rfc4514_string() == "CN=shared.example.com"
    secrets = json.dumps(edge.envoy.config_dump("dynamic_active_secrets"))
    assert "kubernetes://certs/shared-cert" in secrets
    assert "apps-cert" not in secrets  # the ungranted one never reached the proxy


def test_removing_the_grant_withdraws_the_certificate(edge: Edge) -> None:
    _get(edge, edge.granted, "shared.example.com")  # served while granted
    edge.grant_file.unlink()

    def withdrawn() -> bool:
        listeners = json.dumps(edge.envoy.config_dump("dynamic_listeners"))
        return f"0.0.0.0_{edge.granted}" not in listeners

    wait_for(withdrawn, timeout=20, what="the granted listener dropped once the grant is gone")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _get(edge, edge.granted, "shared.example.com")
    reply, _ = _get(edge, edge.https, "secure.example.com")  # the rest keeps working
    assert reply.startswith(b"HTTP/1.1 200")


def test_tls_passthrough_by_sni_and_tcp_route(edge: Edge) -> None:
    reply, cert = _tls(edge.tls, "alpha.example.com", edge.ca, b"hello")
    assert reply == b"alpha:hello"  # the upstream terminated TLS itself
    assert cert.subject.rfc4514_string() == "CN=alpha.example.com"
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _tls(edge.tls, "beta.example.com", edge.ca, b"hello")
    with socket.create_connection(("127.0.0.1", edge.tcp), timeout=5) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4096) == b"echo:ping"
