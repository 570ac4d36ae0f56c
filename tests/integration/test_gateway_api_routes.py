"""Gateway API route features through a real router Envoy: GRPCRoute service / method / header
matches and weights to real gRPC servers (and what a gRPC client gets for a method no rule
takes), HTTPRoute retry (codes, attempts, backoff) seen in Envoy's config and in behaviour."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from tests.support import mesh
from tests.support.grpc_upstream import GrpcUpstream
from tests.support.net import free_port
from tests.support.processes import EnvoyProcess, IstioliteProcess, start_gateway_mesh, stop_all
from tests.support.upstream import BehaviourServer

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NS = "edge"
GRPC_HOST = "grpc.example.com"
HTTP_HOST = "shop.example.com"
SERVICES = ("demo.Greeter", "demo.Split", "demo.Other")
METHODS = ("Hello", "Bye", "Call", "Ping")


@dataclass
class Edge:
    cp: IstioliteProcess
    envoy: EnvoyProcess
    port: int
    flaky: BehaviourServer
    flaky_no_retry: BehaviourServer


def _ref(name: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name, "port": 80}
    if weight is not None:
        ref["weight"] = weight
    return ref


def _grpc_route() -> dict[str, Any]:
    hello = {"service": "demo.Greeter", "method": "Hello"}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": "greeter", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "hostnames": [GRPC_HOST],
            "rules": [
                {
                    "matches": [{"method": hello, "headers": [{"name": "x-pick", "value": "b"}]}],
                    "backendRefs": [_ref("grpc-b")],
                },
                {"matches": [{"method": hello}], "backendRefs": [_ref("grpc-a")]},
                {
                    "matches": [{"method": {"service": "demo.Greeter"}}],
                    "backendRefs": [_ref("grpc-b")],
                },
                {
                    "matches": [{"method": {"service": "demo.Split", "method": "Call"}}],
                    "backendRefs": [_ref("grpc-a", 80), _ref("grpc-b", 20)],
                },
            ],
        },
    }


def _http_route() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "hostnames": [HTTP_HOST],
            "rules": [
                {
                    "matches": [{"path": {"type": "Exact", "value": "/flaky"}}],
                    "retry": {"attempts": 2, "codes": [503], "backoff": "10ms"},
                    "backendRefs": [_ref("flaky")],
                },
                {
                    "matches": [{"path": {"type": "Exact", "value": "/no-retry"}}],
                    "filters": [
                        {
                            "type": "URLRewrite",
                            "urlRewrite": {
                                "path": {"type": "ReplaceFullPath", "replaceFullPath": "/flaky"}
                            },
                        }
                    ],
                    "retry": {"attempts": 0},
                    "backendRefs": [_ref("flaky-no-retry")],
                },
            ],
        },
    }


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp_path = tmp_path_factory.mktemp("gwapi-routes")
    config = tmp_path / "config"
    config.mkdir()
    port = free_port()
    grpc_servers = [GrpcUpstream(n, SERVICES, METHODS) for n in ("grpc-a", "grpc-b")]
    http_servers = {
        n: BehaviourServer("127.0.0.1", free_port(), n) for n in ("flaky", "flaky-no-retry")
    }
    cp = envoy = None
    try:
        objects = []
        for server in grpc_servers:
            server.start()
            objects.append(
                mesh.service(server.name, NS, 80, target_port=server.port, port_name="grpc")
            )
            objects.append(
                mesh.endpoint_slice(server.name, NS, server.port, ["127.0.0.1"], port_name="grpc")
            )
        for name, http in http_servers.items():
            http.start()
            objects.append(mesh.service(name, NS, 80, target_port=http.port))
            objects.append(mesh.endpoint_slice(name, NS, http.port, ["127.0.0.1"]))
        gateway = {
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
        mesh.write(config / "mesh.yaml", *objects, gateway, _grpc_route(), _http_route())
        cp, envoy = start_gateway_mesh(
            [config],
            tmp_path,
            namespace=NS,
            labels={"gateway.networking.k8s.io/gateway-name": "edge"},
            delta=True,
            pod="edge-istio-1",
        )
        yield Edge(cp, envoy, port, http_servers["flaky"], http_servers["flaky-no-retry"])
    finally:
        stop_all(envoy, cp)
        for server in grpc_servers:
            server.stop()
        for http in http_servers.values():
            http.stop()


def _call(
    port: int, path: str, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[grpc.StatusCode, str]:
    options = [("grpc.default_authority", GRPC_HOST)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        method = channel.unary_unary(path)
        try:
            return grpc.StatusCode.OK, method(b"", timeout=10, metadata=metadata).decode()
        except grpc.RpcError as err:
            return err.code(), str(err.details())


def _server(port: int, path: str, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    code, answer = _call(port, path, metadata)
    assert code == grpc.StatusCode.OK, (path, code, answer)
    assert answer.split()[1] == path  # the upstream saw the method the client called
    return answer.split()[0]


def test_grpc_service_and_method_matches(edge: Edge) -> None:
    assert _server(edge.port, "/demo.Greeter/Hello") == "grpc-a"
    # The same method with a header: the rule with the header match is the more specific.
    assert _server(edge.port, "/demo.Greeter/Hello", (("x-pick", "b"),)) == "grpc-b"
    # Service only: every other method of the service.
    assert _server(edge.port, "/demo.Greeter/Bye") == "grpc-b"


def test_grpc_method_without_a_rule_is_unimplemented(edge: Edge) -> None:
    # Envoy answers a request no route takes with HTTP 404, which gRPC maps to UNIMPLEMENTED.
    code, _ = _call(edge.port, "/demo.Other/Ping")
    assert code == grpc.StatusCode.UNIMPLEMENTED
    # A method of a matched service but another method name of a method-exact rule.
    code, _ = _call(edge.port, "/demo.Split/Hello")
    assert code == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_weights_split_80_20(edge: Edge) -> None:
    counts = Counter(_server(edge.port, "/demo.Split/Call") for _ in range(400))
    assert counts["grpc-a"] + counts["grpc-b"] == 400
    assert 280 <= counts["grpc-a"] <= 360, counts


def _get(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {HTTP_HOST}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_retry_turns_a_flaky_upstream_into_successes(edge: Edge) -> None:
    # The upstream fails every other request with 503: one retry always succeeds.
    assert [_get(edge.port, "/flaky") for _ in range(10)] == [200] * 10
    assert edge.flaky.count("/flaky") == 20
    # attempts: 0 turns retries off, even Istio's default retry on 503.
    no_retry = Counter(_get(edge.port, "/no-retry") for _ in range(10))
    assert no_retry == {503: 5, 200: 5}


def _routes(dump: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for config in dump["configs"]:
        for dynamic in config.get("dynamic_route_configs", []):
            for vhost in dynamic["route_config"].get("virtual_hosts", []):
                out.extend(vhost.get("routes", []))
    return out


def test_retry_policy_in_envoys_route_config(edge: Edge) -> None:
    dump = edge.envoy.config_dump()
    assert "error_state" not in json.dumps(dump)
    by_name = {r.get("name"): r for r in _routes(dump)}
    policy = by_name[f"{NS}.shop.0"]["route"]["retry_policy"]
    assert policy["num_retries"] == 2
    assert policy["retry_back_off"]["base_interval"] == "0.010s"
    assert policy["retriable_status_codes"] == [503]
    assert "connect-failure" in policy["retry_on"]
    assert "retry_policy" not in by_name[f"{NS}.shop.1"]["route"]
