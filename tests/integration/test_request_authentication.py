"""RequestAuthentication through a real Envoy: tokens signed here (RS256, ES256), keys inline or
fetched by istiolite from a JWKS server the test owns; a valid token passes, an invalid one gets
401, a request without a token passes (no AuthorizationPolicy requires one)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from istiolite.demo.echo import EchoServer
from tests.support import mesh
from tests.support.jwt import JwksServer, SigningKey, claims, jwks
from tests.support.net import free_port, http_request, loopback_ip
from tests.support.processes import (
    EnvoyProcess,
    IstioliteProcess,
    dump_section,
    http_get,
    sidecar_envoy,
    start_gateway_mesh,
    stop_all,
)
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

INLINE_ISSUER = "https://inline.example.com"
REMOTE_ISSUER = "https://remote.example.com"


def sidecar(ingress_port: int, app_port: int) -> dict[str, Any]:
    """The workload's Sidecar: its app behind an ingress listener on loopback (no iptables)."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {
            "ingress": [
                {
                    "port": {"number": ingress_port, "protocol": "HTTP", "name": "http"},
                    "bind": "127.0.0.1",
                    "defaultEndpoint": f"127.0.0.1:{app_port}",
                }
            ]
        },
    }


def request_authentication(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"jwtRules": list(rules)},
    }


class Workload:
    def __init__(self, port: int) -> None:
        self.port = port

    def get(self, token: str | None = None, *, path: str = "/") -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = http_request("127.0.0.1", self.port, "web", path, headers=headers)
        body = reply.json() if reply.status == 200 else {"text": reply.body}
        return reply.status, body

    def status(self, token: str | None = None) -> int:
        return self.get(token)[0]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Any]:
    """Starts istiolite (JWKS refreshed every second) and a sidecar on a config directory."""
    procs: list[Any] = []
    servers: list[EchoServer] = []

    def start(config: Path, ingress_port: int, app_port: int) -> tuple[IstioliteProcess, Any]:
        servers.append(EchoServer("127.0.0.1", app_port, "app").start())
        cp = IstioliteProcess([config], tmp_path, "--jwks-refresh-interval", "1")
        procs.append(cp)
        envoy = sidecar_envoy(cp, tmp_path, namespace="default")
        procs.append(envoy)
        wait_for(lambda: Workload(ingress_port).status() == 200, what="ingress answers")
        return cp, envoy

    yield start
    stop_all(*reversed(procs))
    for server in servers:
        server.stop()


def _no_rejections(envoy: EnvoyProcess) -> None:
    listeners = dump_section(envoy.config_dump(), "dynamic_listeners")
    assert listeners and not any("error_state" in item for item in listeners)
    rejected = {k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v}
    assert rejected == {}


def test_tokens_are_verified_with_inline_and_fetched_keys(tmp_path: Path, started: Any) -> None:
    inline_key, remote_key, rotated_key = (
        SigningKey("ES256"),
        SigningKey("RS256"),
        SigningKey("RS256"),
    )
    stranger = SigningKey("ES256")
    key_server = JwksServer(loopback_ip(), 0, jwks(remote_key))
    try:
        ingress_port, app_port = free_port(), free_port()
        config = tmp_path / "config"
        config.mkdir()
        mesh.write(
            config / "mesh.yaml",
            sidecar(ingress_port, app_port),
            request_authentication(
                "jwt",
                {
                    "issuer": INLINE_ISSUER,
                    "jwks": jwks(inline_key),
                    "outputPayloadToHeader": "x-jwt-payload",
                    "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
                },
                {"issuer": REMOTE_ISSUER, "jwksUri": key_server.url},
            ),
        )
        _, envoy = started(config, ingress_port, app_port)
        web = Workload(ingress_port)

        # Inline keys (ES256): a valid token passes, and the app sees what the rule outputs.
        payload = claims(INLINE_ISSUER, "alice", scope="read write")
        status, body = web.get(inline_key.sign(payload))
        assert status == 200
        headers = {k.lower(): v for k, v in body["headers"].items()}
        decoded = base64.urlsafe_b64decode(headers["x-jwt-payload"] + "==")
        assert json.loads(decoded) == payload
        assert headers["x-jwt-sub"] == "alice"
        # No token: passes (no AuthorizationPolicy requires one).
        assert web.status() == 200
        # Invalid tokens: 401.
        assert web.status(stranger.sign(claims(INLINE_ISSUER), kid=inline_key.kid)) == 401
        assert web.status(inline_key.sign(claims(INLINE_ISSUER, lifetime=-120))) == 401
        assert web.status(inline_key.sign(claims("https://evil.example.com"))) == 401
        assert web.status("not.a.jwt") == 401

        # Fetched keys (RS256): istiolite got them from the JWKS server before the first push.
        assert web.status(remote_key.sign(claims(REMOTE_ISSUER))) == 200
        assert key_server.requests >= 1
        # Rotation at the key server: picked up at the next refresh; the old key stops working.
        key_server.body = jwks(rotated_key)
        wait_for(
            lambda: web.status(rotated_key.sign(claims(REMOTE_ISSUER))) == 200,
            what="rotated key accepted",
        )
        assert web.status(remote_key.sign(claims(REMOTE_ISSUER))) == 401
        _no_rejections(envoy)
    finally:
        key_server.stop()


def test_key_server_down_at_start_and_bad_policies_stay_contained(
    tmp_path: Path, started: Any
) -> None:
    key = SigningKey("RS256")
    key_host, key_port = loopback_ip(), free_port()
    uri = f"http://{key_host}:{key_port}/jwks"
    ingress_port, app_port = free_port(), free_port()
    config = tmp_path / "config"
    config.mkdir()
    mesh.write(
        config / "mesh.yaml",
        sidecar(ingress_port, app_port),
        request_authentication("remote", {"issuer": REMOTE_ISSUER, "jwksUri": uri}),
    )
    # Invalid policies in a file of their own: each rejected with its field named.
    mesh.write(
        config / "broken.yaml",
        request_authentication("bad-jwks", {"issuer": "a", "jwks": '{"keys": "nope"}'}),
        request_authentication("bad-uri", {"issuer": "b", "jwksUri": "ftp://keys.example.com"}),
    )
    cp, envoy = started(config, ingress_port, app_port)
    web = Workload(ingress_port)
    token = key.sign(claims(REMOTE_ISSUER))
    # Nothing answers at the jwksUri: its tokens are refused, requests without one pass.
    assert web.status(token) == 401
    assert web.status() == 200
    status, configz = http_get(f"http://127.0.0.1:{cp.http_port}/debug/configz")
    assert status == 200 and uri in configz and "tokens are rejected" in configz

    server = JwksServer(key_host, key_port, jwks(key))
    try:
        wait_for(lambda: web.status(token) == 200, what="keys fetched once the server is up")
    finally:
        server.stop()

    rejected = {
        (e.get("object"), e.get("field"))
        for e in cp.log_events()
        if e.get("event") == "invalid object rejected"
    }
    assert ("RequestAuthentication default/bad-jwks", "spec.jwtRules[0].jwks") in rejected
    assert ("RequestAuthentication default/bad-uri", "spec.jwtRules[0].jwksUri") in rejected
    _no_rejections(envoy)


def test_gateway_verifies_tokens_before_routing(tmp_path: Path) -> None:
    """A policy selecting the ingress gateway's pods: jwt_authn on its HTTP server."""
    key, stranger = SigningKey("ES256"), SigningKey("ES256")
    gateway_port, app_port = free_port(), free_port()
    app = EchoServer("127.0.0.1", app_port, "hello-1").start()
    config = tmp_path / "config"
    config.mkdir()
    edge = request_authentication(
        "edge", {"issuer": INLINE_ISSUER, "jwks": jwks(key), "fromParams": ["token"]}
    )
    edge["metadata"]["namespace"] = "istio-system"
    edge["spec"]["selector"] = {"matchLabels": {"istio": "ingressgateway"}}
    mesh.write(
        config / "mesh.yaml",
        mesh.service("hello", "web", 80, target_port=app_port),
        mesh.endpoint_slice("hello", "web", app_port, ["127.0.0.1"]),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "web-gw", "namespace": "istio-system"},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [
                    {
                        "port": {"number": gateway_port, "name": "http", "protocol": "HTTP"},
                        "hosts": ["hello.example.com"],
                    }
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "hello", "namespace": "web"},
            "spec": {
                "hosts": ["hello.example.com"],
                "gateways": ["istio-system/web-gw"],
                "http": [{"route": [{"destination": {"host": "hello"}}]}],
            },
        },
        edge,
    )
    cp = envoy = None
    try:
        cp, envoy = start_gateway_mesh([config], tmp_path, namespace="istio-system", delta=True)

        def status(path: str) -> int:
            return http_request("127.0.0.1", gateway_port, "hello.example.com", path).status

        wait_for(lambda: status("/") == 200, what="gateway routes")
        assert status(f"/?token={key.sign(claims(INLINE_ISSUER))}") == 200
        assert status(f"/?token={stranger.sign(claims(INLINE_ISSUER), kid=key.kid)}") == 401
        _no_rejections(envoy)
    finally:
        stop_all(envoy, cp)
        app.stop()
