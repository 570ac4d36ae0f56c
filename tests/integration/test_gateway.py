"""Ingress gateway through a real Envoy `router`: Gateway servers bound by VirtualServices, HTTPS
terminated with a credentialName Secret served over SDS (the client verifies the certificate),
MUTUAL TLS, httpsRedirect, certificate rotation, and a server whose Secret is missing."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.support import mesh
from tests.support.certs import CertificateAuthority, client_context, tls_secret
from tests.support.net import free_port
from tests.support.processes import (
    EnvoyProcess,
    IstioliteProcess,
    http_get,
    start_gateway_mesh,
    stop_all,
)
from tests.support.upstream import BehaviourServer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
GW_NS = "istio-system"


@dataclass
class Ports:
    http: int
    https: int
    redirect: int
    mutual: int
    broken: int
    mapped: int  # targetPort of the gateway Service's port 80


@dataclass
class GatewayMesh:
    config: Path
    cp: IstioliteProcess
    envoy: EnvoyProcess
    ports: Ports
    ca: CertificateAuthority
    client_ca: CertificateAuthority
    upstream: BehaviourServer


def _gateway(ports: Ports) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "web-gw", "namespace": GW_NS},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {
                    "port": {"number": ports.http, "name": "http", "protocol": "HTTP"},
                    "hosts": ["web/hello.example.com"],
                },
                {
                    "port": {"number": ports.https, "name": "https", "protocol": "HTTPS"},
                    "hosts": ["hello.example.com"],
                    "tls": {"mode": "SIMPLE", "credentialName": "hello-cert"},
                },
                {
                    "port": {"number": ports.redirect, "name": "http-redirect", "protocol": "HTTP"},
                    "hosts": ["secure.example.com"],
                    "tls": {"httpsRedirect": True},
                },
                {
                    "port": {"number": ports.mutual, "name": "https-mutual", "protocol": "HTTPS"},
                    "hosts": ["mtls.example.com"],
                    "tls": {"mode": "MUTUAL", "credentialName": "mtls-cert"},
                },
                {
                    "port": {"number": ports.broken, "name": "https-broken", "protocol": "HTTPS"},
                    "hosts": ["nocert.example.com"],
                    "tls": {"mode": "SIMPLE", "credentialName": "no-such-secret"},
                },
                {
                    "port": {"number": 80, "name": "http-80", "protocol": "HTTP"},
                    "hosts": ["hello.example.com"],
                },
            ],
        },
    }


def _virtual_service() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "hello", "namespace": "web"},
        "spec": {
            "hosts": ["hello.example.com", "mtls.example.com"],
            "gateways": [f"{GW_NS}/web-gw"],
            "http": [{"route": [{"destination": {"host": "hello"}}]}],
        },
    }


def _write_secrets(config: Path, ca: CertificateAuthority, client_ca: CertificateAuthority) -> None:
    hello = ca.issue("hello.example.com", dns=("hello.example.com",))
    mtls = ca.issue("mtls.example.com", dns=("mtls.example.com",))
    mesh.write(
        config / "secrets.yaml",
        tls_secret("hello-cert", GW_NS, hello),
        tls_secret("mtls-cert", GW_NS, mtls, ca=client_ca.cert_pem),
    )


@pytest.fixture(params=[False, True], ids=["sotw", "delta"])
def gateway_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayMesh]:
    config = tmp_path / "config"
    config.mkdir()
    ports = Ports(*(free_port() for _ in range(6)))
    ca, client_ca = CertificateAuthority("gateway CA"), CertificateAuthority("client CA")
    upstream = BehaviourServer("127.0.0.1", free_port(), "hello-1").start()
    port = upstream.port
    mesh.write(
        config / "hello.yaml",
        mesh.service("hello", "web", 80, target_port=port),
        mesh.endpoint_slice("hello", "web", port, ["127.0.0.1"]),
    )
    mesh.write(config / "gateway.yaml", _gateway(ports), _virtual_service())
    # The gateway's own Service: port 80 -> a high targetPort, as a non-root gateway deploys.
    mesh.write(
        config / "ingress-service.yaml",
        mesh.service(
            "istio-ingressgateway",
            GW_NS,
            80,
            target_port=ports.mapped,
            selector={"istio": "ingressgateway"},
        ),
    )
    _write_secrets(config, ca, client_ca)
    cp = envoy = None
    try:
        cp, envoy = start_gateway_mesh([config], tmp_path, namespace=GW_NS, delta=request.param)
        yield GatewayMesh(config, cp, envoy, ports, ca, client_ca, upstream)
    finally:
        stop_all(envoy, cp)
        upstream.stop()


def _plain_get(port: int, host: str, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return _exchange(sock, host, path)


def _exchange(sock: socket.socket, host: str, path: str) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _tls_get(
    port: int,
    sni: str,
    ctx: ssl.SSLContext,
    path: str = "/",
) -> tuple[int, bytes, x509.Certificate]:
    """GET over TLS to 127.0.0.1 with `sni`, the client verifying the server as `sni`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as sock:
            der = sock.getpeercert(binary_form=True)
            assert der is not None
            status, _, body = _exchange(sock, sni, path)
            return status, body, x509.load_der_x509_certificate(der)


def _sans(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


def test_http_server_routes_bound_hosts_only(gateway_mesh: GatewayMesh) -> None:
    port = gateway_mesh.ports.http
    status, _, body = _plain_get(port, "hello.example.com", "/hi")
    assert status == 200
    assert json.loads(body)["server"] == "hello-1"
    # A host the Gateway server does not list: no virtual host, 404 from Envoy.
    assert _plain_get(port, "other.example.com")[0] == 404
    names = {
        listener["name"]
        for listener in gateway_mesh.envoy.config_dump("dynamic_listeners")["configs"]
    }
    p = gateway_mesh.ports
    assert {f"0.0.0.0_{p.http}", f"0.0.0.0_{p.https}", f"0.0.0.0_{p.redirect}"} <= names
    routes = {
        r["route_config"]["name"]
        for r in gateway_mesh.envoy.config_dump("dynamic_route_configs")["configs"]
    }
    assert {f"http.{p.http}", f"https.{p.https}.https.web-gw.{GW_NS}"} <= routes


def test_server_port_of_the_gateway_service_listens_on_its_target_port(
    gateway_mesh: GatewayMesh,
) -> None:
    status, _, body = _plain_get(gateway_mesh.ports.mapped, "hello.example.com")
    assert status == 200
    assert json.loads(body)["server"] == "hello-1"
    routes = {
        r["route_config"]["name"]
        for r in gateway_mesh.envoy.config_dump("dynamic_route_configs")["configs"]
    }
    assert f"http.{gateway_mesh.ports.mapped}" in routes


def test_https_simple_serves_the_secret_certificate(gateway_mesh: GatewayMesh) -> None:
    ctx = client_context(gateway_mesh.ca)
    status, body, cert = _tls_get(gateway_mesh.ports.https, "hello.example.com", ctx)
    assert status == 200
    assert json.loads(body)["server"] == "hello-1"
    assert _sans(cert) == ["hello.example.com"]
    # A client that trusts another CA refuses the handshake.
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_get(
            gateway_mesh.ports.https, "hello.example.com", client_context(gateway_mesh.client_ca)
        )


def test_https_redirect(gateway_mesh: GatewayMesh) -> None:
    status, headers, _ = _plain_get(gateway_mesh.ports.redirect, "secure.example.com", "/login?x=1")
    assert status == 301
    assert headers["location"].startswith("https://secure.example.com")
    assert headers["location"].endswith("/login?x=1")


def test_mutual_tls_requires_a_client_certificate(gateway_mesh: GatewayMesh) -> None:
    port = gateway_mesh.ports.mutual
    client = gateway_mesh.client_ca.issue("client-app", client=True)
    status, _, cert = _tls_get(port, "mtls.example.com", client_context(gateway_mesh.ca, client))
    assert status == 200
    assert _sans(cert) == ["mtls.example.com"]
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _tls_get(port, "mtls.example.com", client_context(gateway_mesh.ca))
    # A certificate from a CA the gateway does not trust is refused too.
    stranger = gateway_mesh.ca.issue("stranger", client=True)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _tls_get(port, "mtls.example.com", client_context(gateway_mesh.ca, stranger))


def test_missing_secret_leaves_out_that_server_only(gateway_mesh: GatewayMesh) -> None:
    names = {
        listener["name"]
        for listener in gateway_mesh.envoy.config_dump("dynamic_listeners")["configs"]
    }
    assert f"0.0.0.0_{gateway_mesh.ports.broken}" not in names
    assert gateway_mesh.envoy.stats()["listener_manager.total_listeners_warming"] == 0
    _, body = http_get(f"http://127.0.0.1:{gateway_mesh.cp.http_port}/debug/configz")
    warnings = json.loads(body)["warnings"]
    assert any(
        w["object"] == f"Gateway {GW_NS}/web-gw"
        and w["field"] == "spec.servers[4].tls.credentialName"
        and "no-such-secret" in w["message"]
        for w in warnings
    ), warnings
    # The Secret appears: the server is added without restarting anything.
    pair = gateway_mesh.ca.issue("nocert.example.com", dns=("nocert.example.com",))
    mesh.write(gateway_mesh.config / "late.yaml", tls_secret("no-such-secret", GW_NS, pair))
    ctx = client_context(gateway_mesh.ca)

    def served() -> bool:
        try:
            return _tls_get(gateway_mesh.ports.broken, "nocert.example.com", ctx)[0] == 404
        except OSError:
            return False

    # No VirtualService binds nocert.example.com: TLS works, and Envoy answers 404.
    wait_for(served, what="server with the late Secret")


def test_rotated_secret_reaches_clients_without_restart(gateway_mesh: GatewayMesh) -> None:
    ctx = client_context(gateway_mesh.ca)
    port = gateway_mesh.ports.https
    before = _tls_get(port, "hello.example.com", ctx)[2].serial_number
    _write_secrets(gateway_mesh.config, gateway_mesh.ca, gateway_mesh.client_ca)
    wait_for(
        lambda: _tls_get(port, "hello.example.com", ctx)[2].serial_number != before,
        what="the rotated certificate served",
    )


def test_debug_views_never_show_the_private_key(gateway_mesh: GatewayMesh) -> None:
    secrets = yaml.safe_load_all((gateway_mesh.config / "secrets.yaml").read_text())
    key_pems = [base64.b64decode(s["data"]["tls.key"]).decode().splitlines()[1] for s in secrets]
    base = f"http://127.0.0.1:{gateway_mesh.cp.http_port}"
    status, dump = http_get(f"{base}/debug/config_dump?proxyID=ingress-1.{GW_NS}")
    assert status == 200
    assert "kubernetes://hello-cert" in dump and "[redacted]" in dump
    for page in (dump, http_get(f"{base}/debug/configz")[1], gateway_mesh.cp.log()):
        for line in key_pems:
            assert line not in page
