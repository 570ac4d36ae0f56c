"""Gateway API ingress through a real Envoy `router` labelled with its Gateway's name: HTTPRoute
path/header/query matches, 70/30 weights, header modifiers, redirect, rewrite, mirror and
a request timeout (504), all through the same generators as Istio's own APIs."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import mesh
from tests.support.net import free_port
from tests.support.processes import EnvoyProcess, IstioliteProcess, start_gateway_mesh, stop_all
from tests.support.upstream import BehaviourServer
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NS = "edge"
HOST = "shop.example.com"


@dataclass
class Ingress:
    cp: IstioliteProcess
    envoy: EnvoyProcess
    port: int
    v1: BehaviourServer
    v2: BehaviourServer
    mirror: BehaviourServer


def _gateway(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": NS},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {"name": "http", "port": port, "protocol": "HTTP", "hostname": "*.example.com"}
            ],
        },
    }


def _backend(name: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name, "port": 80}
    if weight is not None:
        ref["weight"] = weight
    return ref


def _route() -> dict[str, Any]:
    rules = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/split"}}],
            "backendRefs": [_backend("v1", 70), _backend("v2", 30)],
        },
        {
            "matches": [
                {
                    "path": {"type": "Exact", "value": "/match"},
                    "headers": [{"name": "x-canary", "value": "yes"}],
                },
                {
                    "path": {"type": "Exact", "value": "/match"},
                    "queryParams": [{"name": "v", "value": "2"}],
                },
                {"path": {"type": "Exact", "value": "/match"}, "method": "POST"},
            ],
            "backendRefs": [_backend("v2")],
        },
        {
            "matches": [{"path": {"type": "Exact", "value": "/match"}}],
            "backendRefs": [_backend("v1")],
        },
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/headers"}}],
            "filters": [
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {
                        "set": [{"name": "x-route", "value": "gw-api"}],
                        "remove": ["x-drop"],
                    },
                },
                {
                    "type": "ResponseHeaderModifier",
                    "responseHeaderModifier": {"add": [{"name": "x-served-by", "value": "edge"}]},
                },
                {"type": "RequestMirror", "requestMirror": {"backendRef": _backend("mirror")}},
            ],
            "backendRefs": [_backend("v1")],
        },
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
            "filters": [
                {
                    "type": "URLRewrite",
                    "urlRewrite": {
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}
                    },
                }
            ],
            "backendRefs": [_backend("v1")],
        },
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/moved"}}],
            "filters": [
                {
                    "type": "RequestRedirect",
                    "requestRedirect": {"hostname": "new.example.com", "statusCode": 301},
                }
            ],
        },
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}],
            "timeouts": {"request": "500ms"},
            "backendRefs": [_backend("v1")],
        },
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": "web"},
        "spec": {
            "parentRefs": [{"name": "edge", "namespace": NS}],
            "hostnames": [HOST],
            "rules": rules,
        },
    }


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[Ingress]:
    config = tmp_path / "config"
    config.mkdir()
    port = free_port()
    upstreams = {
        name: BehaviourServer("127.0.0.1", free_port(), name).start()
        for name in ("v1", "v2", "mirror")
    }
    objects = []
    for name, server in upstreams.items():
        objects.append(mesh.service(name, "web", 80, target_port=server.port))
        objects.append(mesh.endpoint_slice(name, "web", server.port, ["127.0.0.1"]))
    mesh.write(config / "services.yaml", *objects)
    # The Gateway allows routes of its own namespace only by default: this one lets all in.
    gateway = _gateway(port)
    gateway["spec"]["listeners"][0]["allowedRoutes"] = {"namespaces": {"from": "All"}}
    mesh.write(config / "gateway.yaml", gateway, _route())
    cp = envoy = None
    try:
        cp, envoy = start_gateway_mesh(
            [config],
            tmp_path,
            namespace=NS,
            labels={"gateway.networking.k8s.io/gateway-name": "edge"},
            delta=True,
            pod="edge-istio-1",
        )
        yield Ingress(cp, envoy, port, upstreams["v1"], upstreams["v2"], upstreams["mirror"])
    finally:
        stop_all(envoy, cp)
        for server in upstreams.values():
            server.stop()


def _request(
    port: int, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}Content-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    out = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), out, body


def _server(port: int, path: str, **kw: Any) -> str:
    status, _, body = _request(port, path, **kw)
    assert status == 200, (path, status, body)
    return str(json.loads(body)["server"])


def test_matches_pick_the_backend(ingress: Ingress) -> None:
    p = ingress.port
    assert _server(p, "/match") == "v1"
    assert _server(p, "/match", headers={"x-canary": "yes"}) == "v2"
    assert _server(p, "/match?v=2") == "v2"
    # (The method match is in the golden case: these upstreams answer GET only.)
    # Exact: a longer path is not /match; no other rule takes it on this host.
    assert _request(p, "/match/more")[0] == 404
    # Another host: no listener hostname / route hostname in common.
    with socket.create_connection(("127.0.0.1", p), timeout=5) as sock:
        sock.sendall(b"GET /match HTTP/1.1\r\nHost: other.example.org\r\nConnection: close\r\n\r\n")
        assert b" 404 " in sock.recv(4096)


def test_weights_split_70_30(ingress: Ingress) -> None:
    counts = Counter(_server(ingress.port, "/split") for _ in range(1000))
    assert counts["v1"] + counts["v2"] == 1000
    assert 650 <= counts["v1"] <= 750, counts


def test_header_modifiers_and_mirror(ingress: Ingress) -> None:
    status, headers, body = _request(ingress.port, "/headers", headers={"x-drop": "1"})
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert seen["x-route"] == "gw-api"
    assert "x-drop" not in seen
    assert headers["x-served-by"] == "edge"
    wait_for(lambda: ingress.mirror.count("/headers") >= 1, timeout=10, what="mirrored request")


def test_rewrite_redirect_and_timeout(ingress: Ingress) -> None:
    status, _, body = _request(ingress.port, "/old/item")
    assert status == 200 and json.loads(body)["path"] == "/new/item"
    status, headers, _ = _request(ingress.port, "/moved/here")
    assert status == 301
    assert headers["location"].startswith("http://new.example.com")
    assert headers["location"].endswith("/moved/here")
    assert _request(ingress.port, "/slow/2000")[0] == 504
    assert _request(ingress.port, "/slow/10")[0] == 200


def test_config_dump_has_no_errors(ingress: Ingress) -> None:
    dump = json.dumps(ingress.envoy.config_dump())
    assert "error_state" not in dump
    assert f"0.0.0.0_{ingress.port}" in dump
