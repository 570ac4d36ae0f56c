"""Certificate files through SDS (istiod's `file-cert:`/`file-root:` secrets) with a real Envoy:
an object naming files Envoy does not have leaves only its own cluster or Gateway server
unready. Before, Envoy refused the whole CDS or LDS update that named them, taking every other
change of that update with it."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import mesh as objects
from tests.support.certs import CertificateAuthority, client_context, server_context
from tests.support.net import free_port, http_request
from tests.support.processes import (
    EnvoyProcess,
    IstioliteProcess,
    start_gateway_mesh,
    start_sidecar_mesh,
    stop_all,
)
from tests.support.upstream import EchoServer, HttpUpstream, NamedUpstream, Request
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NS = "shop"
GW_NS = "istio-system"


class TlsBackend(HttpUpstream):
    """An HTTPS upstream that wants a client certificate and says whose it saw."""

    def answer(self, request: Request) -> tuple[int, bytes]:
        seen = request.handshake
        return 200, json.dumps({"client_cn": seen.client_cn if seen else None}).encode()


def _rule(name: str, cert: Path, key: Path, ca: Path) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "host": name,
            "trafficPolicy": {
                "tls": {
                    "mode": "MUTUAL",
                    "clientCertificate": str(cert),
                    "privateKey": str(key),
                    "caCertificates": str(ca),
                    "sni": "backend",
                }
            },
        },
    }


def _rejected(envoy: EnvoyProcess, prefix: str) -> int:
    return sum(
        v
        for k, v in envoy.stats().items()
        if k.startswith(prefix) and k.endswith("update_rejected")
    )


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_rule_naming_missing_files_leaves_only_its_own_cluster_unready(
    tmp_path: Path, delta: bool
) -> None:
    ca = CertificateAuthority("file certificates CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    cert, key = ca.issue("envoy-client", client=True).write(tmp_path, "client")
    missing = tmp_path / "not-there"
    config = tmp_path / "config"
    config.mkdir()
    server = ca.issue("backend", dns=("backend",))
    ports = {"good": free_port(), "bad": free_port(), "later": free_port()}
    backends: dict[str, HttpUpstream] = {
        name: TlsBackend("127.0.0.1", free_port(), tls=server_context(server, client_ca=ca))
        for name in ("good", "bad")
    }
    backends["later"] = NamedUpstream("127.0.0.1", free_port(), "later")
    for backend in backends.values():
        backend.start()
    cp: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None
    try:
        services = []
        for name, backend in backends.items():
            services += [
                objects.service(name, NS, ports[name], target_port=backend.port),
                objects.endpoint_slice(name, NS, backend.port, ["127.0.0.1"]),
            ]
        objects.write(config / "services.yaml", *services[:4])  # good and bad
        objects.write(config / "good.yaml", _rule("good", cert, key, tmp_path / "ca.pem"))
        cp, envoy = start_sidecar_mesh([config], tmp_path, namespace=NS, delta=delta)

        def get(name: str) -> Any:
            return http_request("127.0.0.1", ports[name], name, timeout=10)

        wait_for(lambda: get("good").status == 200, what="the good backend over mTLS")
        assert json.loads(get("good").body) == {"client_cn": "envoy-client"}
        # One update: a rule naming files Envoy does not have, and a new service beside it.
        objects.write(
            config / "bad.yaml",
            _rule("bad", missing / "cert.pem", missing / "key.pem", missing / "ca.pem"),
        )
        objects.write(config / "services.yaml", *services)
        # The new service arrives in that same CDS update: it was not refused with the bad rule.
        wait_for(lambda: get("later").status == 200, timeout=30, what="the later service served")
        assert _rejected(envoy, "cluster_manager.cds") == 0
        wait_for(
            lambda: _rejected(envoy, "sds.") >= 1,  # type: ignore[arg-type]
            timeout=30,
            what="Envoy refusing only the secret that names missing files",
        )
        assert _rejected(envoy, "cluster_manager.cds") == 0
        assert _rejected(envoy, "listener_manager.lds") == 0
        assert get("good").status == 200
        # The bad cluster never gets its certificate: its requests fail, nothing else does.
        assert get("bad").status in (503, 404)
    finally:
        stop_all(envoy, cp)
        for backend in backends.values():
            backend.stop()


def _gateway(port: int, servers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": GW_NS},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {
                    "port": {"number": port, "name": "tls-passthrough", "protocol": "TLS"},
                    "hosts": ["pass.example.com"],
                    "tls": {"mode": "PASSTHROUGH"},
                },
                *servers,
            ],
        },
    }


def _https_server(port: int, name: str, host: str, cert: Path, key: Path) -> dict[str, Any]:
    return {
        "port": {"number": port, "name": name, "protocol": "HTTPS"},
        "hosts": [host],
        "tls": {"mode": "SIMPLE", "serverCertificate": str(cert), "privateKey": str(key)},
    }


def _tls_exchange(port: int, sni: str, ca: CertificateAuthority, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client_context(ca).wrap_socket(raw, server_hostname=sni) as conn:
            conn.sendall(data)
            return conn.recv(4096)


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[tuple[CertificateAuthority, Path, Path]]:
    ca = CertificateAuthority("gateway files CA")
    cert, key = ca.issue("good.example.com", dns=("good.example.com",)).write(tmp_path, "good")
    yield ca, cert, key


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_gateway_server_with_missing_files_leaves_its_neighbours_serving(
    tmp_path: Path, pki: tuple[CertificateAuthority, Path, Path], delta: bool
) -> None:
    ca, cert, key = pki
    passthrough = EchoServer("pass", server_context(ca.issue("pass.example.com")))
    web = NamedUpstream("127.0.0.1", free_port(), "web").start()
    config = tmp_path / "config"
    config.mkdir()
    port = free_port()
    missing = tmp_path / "not-there"
    cp: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None
    try:
        objects.write(
            config / "services.yaml",
            objects.service("pass", "apps", 443, target_port=passthrough.port, port_name="tls"),
            objects.endpoint_slice("pass", "apps", passthrough.port, ["127.0.0.1"],
                                   port_name="tls"),
            objects.service("web", "apps", 80, target_port=web.port),
            objects.endpoint_slice("web", "apps", web.port, ["127.0.0.1"]),
        )  # fmt: skip
        routes = [
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "pass", "namespace": "apps"},
                "spec": {
                    "hosts": ["pass.example.com"],
                    "gateways": [f"{GW_NS}/edge"],
                    "tls": [
                        {
                            "match": [{"sniHosts": ["pass.example.com"]}],
                            "route": [{"destination": {"host": "pass", "port": {"number": 443}}}],
                        }
                    ],
                },
            },
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "web", "namespace": "apps"},
                "spec": {
                    "hosts": ["good.example.com", "bad.example.com"],
                    "gateways": [f"{GW_NS}/edge"],
                    "http": [{"route": [{"destination": {"host": "web"}}]}],
                },
            },
        ]
        objects.write(config / "routes.yaml", *routes)
        objects.write(config / "gateway.yaml", _gateway(port, []))
        cp, envoy = start_gateway_mesh([config], tmp_path, namespace=GW_NS, delta=delta)
        wait_for(
            lambda: _tls_exchange(port, "pass.example.com", ca, b"hi") == b"pass:hi",
            what="passthrough served",
        )
        # One update: a server with the files Envoy has, one naming files it does not have.
        objects.write(
            config / "gateway.yaml",
            _gateway(
                port,
                [
                    _https_server(port, "https-good", "good.example.com", cert, key),
                    _https_server(
                        port, "https-bad", "bad.example.com", missing / "c.pem", missing / "k.pem"
                    ),
                ],
            ),
        )

        def good_served() -> bool:
            request = b"GET / HTTP/1.1\r\nHost: good.example.com\r\nConnection: close\r\n\r\n"
            reply = _tls_exchange(port, "good.example.com", ca, request)
            return reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"web")

        # The listener update is accepted; the good server comes up beside the passthrough
        # chain once the missing secret's wait is over (Envoy's initial fetch timeout).
        wait_for(good_served, timeout=45, what="the good HTTPS server")
        assert _rejected(envoy, "listener_manager.lds") == 0
        assert _tls_exchange(port, "pass.example.com", ca, b"again") == b"pass:again"
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            _tls_exchange(port, "bad.example.com", ca, b"x")
    finally:
        stop_all(envoy, cp)
        passthrough.stop()
        web.stop()
