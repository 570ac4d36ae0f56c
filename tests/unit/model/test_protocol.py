"""Protocol selection, as Istio does it: appProtocol, then the port-name prefix, then sniffing."""

from __future__ import annotations

import pytest

from istiolite.model.protocol import Protocol, protocol_for_port


@pytest.mark.parametrize(
    ("name", "app_protocol", "l4", "expected"),
    [
        ("http", "", "TCP", Protocol.HTTP),
        ("http-web", "", "TCP", Protocol.HTTP),
        ("HTTP-Web", "", "TCP", Protocol.HTTP),
        ("http2-api", "", "TCP", Protocol.HTTP2),
        ("grpc", "", "TCP", Protocol.GRPC),
        ("grpc-api", "", "TCP", Protocol.GRPC),
        ("grpc-web", "", "TCP", Protocol.GRPC_WEB),
        # Istio checks the "grpc-web" prefix before cutting the name at the first hyphen.
        ("grpc-web-ui", "", "TCP", Protocol.GRPC_WEB),
        ("tcp-pg", "", "TCP", Protocol.TCP),
        ("tcp", "", "TCP", Protocol.TCP),
        ("https-admin", "", "TCP", Protocol.HTTPS),
        ("tls-db", "", "TCP", Protocol.TLS),
        ("mongo-main", "", "TCP", Protocol.MONGO),
        ("redis", "", "TCP", Protocol.REDIS),
        ("mysql-primary", "", "TCP", Protocol.MYSQL),
        # Unnamed or unrecognized: Envoy sniffs HTTP vs. TCP.
        ("", "", "TCP", Protocol.AUTO),
        ("web", "", "TCP", Protocol.AUTO),
        ("postgres", "", "TCP", Protocol.AUTO),
        # UDP is UDP whatever the name says.
        ("dns", "", "UDP", Protocol.UDP),
        ("http", "", "UDP", Protocol.UDP),
    ],
)
def test_protocol_from_port_name(name: str, app_protocol: str, l4: str, expected: Protocol) -> None:
    assert protocol_for_port(name, app_protocol, l4) == expected


@pytest.mark.parametrize(
    ("name", "app_protocol", "expected"),
    [
        ("tcp-x", "http", Protocol.HTTP),
        ("http-x", "tcp", Protocol.TCP),
        ("", "grpc", Protocol.GRPC),
        ("web", "HTTP2", Protocol.HTTP2),
        ("web", "kubernetes.io/h2c", Protocol.HTTP2),
        ("web", "kubernetes.io/ws", Protocol.HTTP),
        ("web", "kubernetes.io/wss", Protocol.HTTPS),
    ],
)
def test_app_protocol_beats_the_port_name(name: str, app_protocol: str, expected: Protocol) -> None:
    assert protocol_for_port(name, app_protocol, "TCP") == expected


def test_udp_beats_app_protocol() -> None:
    assert protocol_for_port("http", "http", "UDP") == Protocol.UDP


def test_http_family_flags() -> None:
    assert {p for p in Protocol if p.is_http} == {
        Protocol.HTTP,
        Protocol.HTTP2,
        Protocol.GRPC,
        Protocol.GRPC_WEB,
    }
    # gRPC-Web is HTTP/1.1-compatible: only HTTP2 and gRPC force HTTP/2 upstream.
    assert {p for p in Protocol if p.is_http2} == {Protocol.HTTP2, Protocol.GRPC}


def test_unrecognised_app_protocol_is_sniffed_not_the_port_name() -> None:
    # As Istio: a set appProtocol replaces the name entirely, recognised or not.
    assert protocol_for_port("http", "custom-thing", "TCP") == Protocol.AUTO
    assert protocol_for_port("tcp", "grpc-web-ui", "TCP") == Protocol.GRPC_WEB
