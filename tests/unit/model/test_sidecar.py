"""Sidecar: parsing, and Istio's ValidateSidecar rules with the field at fault named."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.destinationrule import ConnectionPool, TcpSettings
from istiolite.model.protocol import Protocol
from istiolite.model.sidecar import (
    EgressListener,
    IngressTLS,
    SidecarPort,
    host_matches,
    parse_sidecar,
)
from istiolite.model.validation import ValidationError


def sidecar(spec: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": spec,
    }


def ingress(**fields: Any) -> dict[str, Any]:
    return {"port": {"number": 9080, "protocol": "HTTP", "name": "http"}, **fields}


def egress(*hosts: str, **fields: Any) -> dict[str, Any]:
    return {"hosts": list(hosts or ["./*"]), **fields}


def test_full_sidecar_is_parsed() -> None:
    parsed = parse_sidecar(
        sidecar(
            {
                "workloadSelector": {"labels": {"app": "web"}},
                "ingress": [
                    ingress(
                        defaultEndpoint="127.0.0.1:8080",
                        captureMode="NONE",
                        bind="10.1.0.5",
                        connectionPool={"tcp": {"maxConnections": 10}},
                    ),
                    {
                        "port": {"number": 9443, "protocol": "HTTPS", "name": "https"},
                        "defaultEndpoint": "unix:///var/run/app.sock",
                        "tls": {
                            "mode": "SIMPLE",
                            "serverCertificate": "/certs/cert.pem",
                            "privateKey": "/certs/key.pem",
                            "minProtocolVersion": "TLSV1_2",
                        },
                    },
                ],
                "egress": [
                    egress(
                        "data/*",
                        port={"number": 5432, "protocol": "tcp", "name": "pg"},
                        bind="127.0.0.2",
                        captureMode="NONE",
                    ),
                    egress("./*", "istio-system/*"),
                ],
                "inboundConnectionPool": {"http": {"http1MaxPendingRequests": 5}},
                "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            }
        )
    )
    assert parsed.workload_selector == {"app": "web"}
    first, second = parsed.ingress
    assert first.port == SidecarPort(9080, "HTTP", "http")
    assert (first.bind, first.capture_mode, first.default_endpoint) == (
        "10.1.0.5",
        "NONE",
        "127.0.0.1:8080",
    )
    assert first.connection_pool == ConnectionPool(tcp=TcpSettings(max_connections=10))
    assert second.tls == IngressTLS(
        mode="SIMPLE",
        server_certificate="/certs/cert.pem",
        private_key="/certs/key.pem",
        min_protocol_version="TLSV1_2",
    )
    assert second.capture_mode == "DEFAULT"
    ports, catch_all = parsed.egress
    assert ports == EgressListener(
        hosts=(("data", "*"),),
        port=SidecarPort(5432, "TCP", "pg"),
        bind="127.0.0.2",
        capture_mode="NONE",
    )
    assert catch_all.port is None and catch_all.hosts == ((".", "*"), ("istio-system", "*"))
    assert parsed.egress_hosts == (("data", "*"), (".", "*"), ("istio-system", "*"))
    assert parsed.outbound_mode == "REGISTRY_ONLY"
    # A port's own pool wins over the top-level inboundConnectionPool.
    assert parsed.inbound_pool_for(9080) == first.connection_pool
    assert parsed.inbound_pool_for(9443) == parsed.inbound_connection_pool
    assert parsed.unapplied() == []


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("HTTP", Protocol.HTTP),
        ("grpc", Protocol.GRPC),
        ("GRPC-Web", Protocol.GRPC_WEB),
        ("TCP", Protocol.TCP),
        ("HTTPS", Protocol.HTTPS),
        ("", Protocol.AUTO),
        ("HTTP_PROXY", Protocol.HTTP),
    ],
)
def test_port_protocols(protocol: str, expected: Protocol) -> None:
    parsed = parse_sidecar(sidecar({"egress": [egress(port={"number": 80, "protocol": protocol})]}))
    port = parsed.egress[0].port
    assert port is not None and port.app_protocol == expected


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "spec"),
        ({"workloadSelector": {"labels": {"app": "*"}}, "egress": [egress()]}, "labels.app"),
        ({"ingress": [{"defaultEndpoint": "127.0.0.1:80"}]}, "spec.ingress[0].port"),
        ({"ingress": [{"port": {"protocol": "HTTP"}}]}, "spec.ingress[0].port.number"),
        ({"ingress": [{"port": {"number": 0}}]}, "spec.ingress[0].port.number"),
        ({"ingress": [{"port": {"number": 70000}}]}, "spec.ingress[0].port.number"),
        ({"ingress": [{"port": {"number": 80, "protocol": "QUIC"}}]}, "port.protocol"),
        ({"ingress": [{"port": {"number": 80, "name": "Bad_Name"}}]}, "spec.ingress[0].port.name"),
        ({"ingress": [{"port": {"number": 80, "targetPort": 81}}]}, "port.targetPort"),
        ({"ingress": [ingress(), ingress()]}, "spec.ingress[1].port.number"),
        ({"ingress": [ingress(bind="localhost")]}, "spec.ingress[0].bind"),
        ({"ingress": [ingress(captureMode="TPROXY")]}, "spec.ingress[0].captureMode"),
        ({"ingress": [ingress(defaultEndpoint="10.0.0.1:8080")]}, "defaultEndpoint"),
        ({"ingress": [ingress(defaultEndpoint="127.0.0.1")]}, "spec.ingress[0].defaultEndpoint"),
        ({"ingress": [ingress(defaultEndpoint="127.0.0.1:http")]}, "defaultEndpoint"),
        ({"ingress": [ingress(defaultEndpoint="127.0.0.1:0")]}, "defaultEndpoint"),
        ({"ingress": [ingress(defaultEndpoint="::1:8080")]}, "defaultEndpoint"),
        ({"ingress": [ingress(defaultEndpoint="unix://relative.sock")]}, "defaultEndpoint"),
        ({"ingress": [ingress(connectionPool={})]}, "spec.ingress[0].connectionPool"),
        ({"ingress": [ingress(tls={"mode": "SIMPLE"})]}, "spec.ingress[0].tls"),
        ({"inboundConnectionPool": {"tcp": {"maxConnections": -1}}}, "tcp.maxConnections"),
        ({"ingress": [ingress(unknown=1)]}, "spec.ingress[0].unknown"),
        ({"egress": []}, "spec"),
        ({"egress": [{"hosts": []}]}, "spec.egress[0].hosts"),
        ({"egress": [egress("nohost")]}, "spec.egress[0].hosts[0]"),
        ({"egress": [egress("/foo")]}, "spec.egress[0].hosts[0]"),
        ({"egress": [egress("Bad_NS/*")]}, "spec.egress[0].hosts[0]"),
        ({"egress": [egress("./foo..com")]}, "spec.egress[0].hosts[0]"),
        ({"egress": [egress("./a*.com")]}, "spec.egress[0].hosts[0]"),
        ({"egress": [egress(), egress("*/*")]}, "spec.egress[0].port"),
        ({"egress": [egress(), egress(port={"number": 80})]}, "spec.egress[0].port"),
        (
            {"egress": [egress(port={"number": 80}), egress(port={"number": 80}), egress()]},
            "spec.egress[1].port.number",
        ),
        ({"egress": [egress(port={"number": 80}, bind="not-an-ip")]}, "spec.egress[0].bind"),
        ({"egress": [egress(port={"number": 0}, bind="127.0.0.1")]}, "spec.egress[0].bind"),
        ({"egress": [egress(port={"number": 0}, bind="unix://x")]}, "spec.egress[0].bind"),
        (
            {"egress": [egress(port={"number": 0}, bind="unix:///a", captureMode="IPTABLES")]},
            "spec.egress[0].captureMode",
        ),
        (
            {
                "egress": [
                    egress(port={"number": 0}, bind="unix:///a"),
                    egress(port={"number": 0}, bind="unix:///a"),
                ]
            },
            "spec.egress[1].bind",
        ),
        ({"egress": [egress(captureMode="none")]}, "spec.egress[0].captureMode"),
        ({"outboundTrafficPolicy": {"mode": "DENY"}}, "spec.outboundTrafficPolicy.mode"),
        (
            {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY", "egressProxy": {"host": "x"}}},
            "spec.outboundTrafficPolicy.egressProxy",
        ),
    ],
)
def test_invalid_fields_are_named(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_sidecar(sidecar(spec))
    assert field in err.value.field, err.value


@pytest.mark.parametrize(
    ("tls", "field"),
    [
        ({"mode": "ISTIO_MUTUAL"}, "tls.mode"),
        ({"mode": "AUTO_PASSTHROUGH"}, "tls.mode"),
        ({"mode": "SIMPLE", "privateKey": "/k"}, "tls.serverCertificate"),
        ({"mode": "SIMPLE", "serverCertificate": "/c"}, "tls.privateKey"),
        ({"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k"}, "tls.caCertificates"),
        ({"mode": "SIMPLE", "credentialName": "cert"}, "tls.credentialName"),
        ({"mode": "SIMPLE", "subjectAltNames": ["a"]}, "tls.subjectAltNames"),
        ({"httpsRedirect": True}, "tls.httpsRedirect"),
        ({"mode": "SIMPLE", "minProtocolVersion": "TLSV9"}, "tls.minProtocolVersion"),
    ],
)
def test_ingress_tls_validation(tls: dict[str, Any], field: str) -> None:
    https = {"port": {"number": 9443, "protocol": "HTTPS"}, "tls": tls}
    with pytest.raises(ValidationError) as err:
        parse_sidecar(sidecar({"ingress": [https]}))
    assert err.value.field == f"spec.ingress[0].{field}"


def test_ingress_tls_needs_an_https_or_tls_port() -> None:
    tls = {"mode": "SIMPLE", "serverCertificate": "/c", "privateKey": "/k"}
    with pytest.raises(ValidationError) as err:
        parse_sidecar(sidecar({"ingress": [ingress(tls=tls)]}))
    assert err.value.field == "spec.ingress[0].tls"


@pytest.mark.parametrize(
    "endpoint",
    ["127.0.0.1:8080", "0.0.0.0:8080", "[::1]:8080", "[::]:8080", ":8080", "unix:///run/a.sock"],
)
def test_accepted_default_endpoints(endpoint: str) -> None:
    parsed = parse_sidecar(sidecar({"ingress": [ingress(defaultEndpoint=endpoint)]}))
    assert parsed.ingress[0].default_endpoint == endpoint


def test_settings_without_effect_are_reported() -> None:
    parsed = parse_sidecar(
        sidecar(
            {
                "ingress": [
                    {
                        "port": {"number": 9443, "protocol": "TLS"},
                        "tls": {"mode": "PASSTHROUGH"},
                        "connectionPool": {"http": {"maxRetries": 1}},
                    }
                ],
                "egress": [
                    egress(port={"number": 0, "protocol": "HTTP"}, bind="unix:///run/out.sock"),
                    egress(port={"number": 3128, "protocol": "HTTP_PROXY"}),
                    egress(),
                ],
                "outboundTrafficPolicy": {
                    "mode": "ALLOW_ANY",
                    "egressProxy": {"host": "proxy.example", "port": {"number": 3128}},
                },
            }
        )
    )
    fields = [f for f, _ in parsed.unapplied()]
    assert fields == [
        "spec.egress[0].bind",
        "spec.egress[1].port.protocol",
        "spec.ingress[0].connectionPool.http",
        "spec.ingress[0].tls.mode",
        "spec.outboundTrafficPolicy.egressProxy",
    ]


def test_egress_hosts_of_the_service_namespace_take_priority_over_wildcard_ones() -> None:
    listener = parse_sidecar(sidecar({"egress": [egress("*/*", "data/db.data.svc.cluster.local")]}))
    hosts = listener.egress[0]
    # data/ names only db: other services there are not imported, even with */*.
    assert hosts.imports("data", "db.data.svc.cluster.local", "shop")
    assert not hosts.imports("data", "cache.data.svc.cluster.local", "shop")
    assert hosts.imports("billing", "pay.billing.svc.cluster.local", "shop")


def test_dot_is_the_config_namespace_and_tilde_imports_nothing() -> None:
    listener = parse_sidecar(sidecar({"egress": [egress("./*", "~/*")]}, "istio-system")).egress[0]
    assert listener.imports("shop", "web.shop.svc.cluster.local", "shop")
    assert not listener.imports("other", "web.other.svc.cluster.local", "shop")


@pytest.mark.parametrize(
    ("hostname", "pattern", "expected"),
    [
        ("a.example.com", "*", True),
        ("a.example.com", "*.example.com", True),
        ("example.com", "*.example.com", False),
        ("*.api.example.com", "*.example.com", True),
        ("*.example.com", "*.api.example.com", False),
        ("a.example.com", "a.example.com", True),
        ("b.example.com", "a.example.com", False),
    ],
)
def test_host_matching(hostname: str, pattern: str, expected: bool) -> None:
    assert host_matches(hostname, pattern) is expected
