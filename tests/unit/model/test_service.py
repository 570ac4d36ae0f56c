"""Service parsing: the validation errors a user sees, and the defaults Kubernetes applies."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.kinds import parse_object
from istiolite.model.protocol import Protocol
from istiolite.model.service import Service
from istiolite.model.validation import ValidationError


def raw_service(*ports: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ports": list(ports), **spec},
    }


def parse(raw: dict[str, Any]) -> Service:
    _, obj = parse_object(raw)
    assert isinstance(obj, Service)
    return obj


def error_field(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as err:
        parse_object(raw)
    return err.value.field


@pytest.mark.parametrize("number", [0, 65536, 70000, -1, "80", True, None])
def test_port_out_of_range_or_not_a_number_names_the_port(number: Any) -> None:
    assert error_field(raw_service({"name": "http", "port": number})) == "spec.ports[0].port"


def test_error_points_at_the_offending_port_index() -> None:
    raw = raw_service({"name": "http", "port": 80}, {"name": "admin", "port": 70000})
    assert error_field(raw) == "spec.ports[1].port"


def test_second_port_without_a_name_is_named() -> None:
    raw = raw_service({"name": "http", "port": 80}, {"port": 81})
    assert error_field(raw) == "spec.ports[1].name"


def test_two_unnamed_ports_report_the_first_offender_like_kubernetes() -> None:
    raw = raw_service({"port": 80}, {"port": 81})
    assert error_field(raw) == "spec.ports[0].name"


def test_single_unnamed_port_is_allowed() -> None:
    svc = parse(raw_service({"port": 80}))
    assert svc.ports[0].name == ""


def test_duplicate_port_number_and_protocol() -> None:
    raw = raw_service({"name": "http", "port": 80}, {"name": "web", "port": 80})
    assert error_field(raw) == "spec.ports[1].port"


def test_duplicate_port_name() -> None:
    raw = raw_service({"name": "http", "port": 80}, {"name": "http", "port": 81})
    assert error_field(raw) == "spec.ports[1].name"


def test_same_number_over_tcp_and_udp_is_allowed() -> None:
    svc = parse(
        raw_service(
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "dns-udp", "port": 53, "protocol": "UDP"},
        )
    )
    assert [(p.port, p.l4_protocol) for p in svc.ports] == [(53, "TCP"), (53, "UDP")]


def test_unknown_l4_protocol() -> None:
    raw = raw_service({"name": "x", "port": 80, "protocol": "ICMP"})
    assert error_field(raw) == "spec.ports[0].protocol"


@pytest.mark.parametrize("cluster_ip", ["10.0.0.300", "not-an-ip", "none"])
def test_bad_cluster_ip(cluster_ip: str) -> None:
    raw = raw_service({"name": "http", "port": 80}, clusterIP=cluster_ip)
    assert error_field(raw) == "spec.clusterIP"


def test_headless_and_ipv6_cluster_ips_are_accepted() -> None:
    headless = parse(raw_service({"name": "http", "port": 80}, clusterIP="None"))
    assert headless.headless
    v6 = parse(raw_service({"name": "http", "port": 80}, clusterIP="fd00:10:96::a"))
    assert v6.cluster_ip == "fd00:10:96::a" and not v6.headless


def test_bad_type() -> None:
    raw = raw_service({"name": "http", "port": 80}, type="Ingress")
    assert error_field(raw) == "spec.type"


def test_type_defaults_to_cluster_ip() -> None:
    assert parse(raw_service({"name": "http", "port": 80})).type == "ClusterIP"


def test_cluster_ip_service_needs_a_port() -> None:
    assert error_field(raw_service()) == "spec.ports"


def test_headless_and_external_name_services_may_have_no_ports() -> None:
    assert parse(raw_service(clusterIP="None")).ports == ()
    external = parse(raw_service(type="ExternalName", externalName="db.example.com"))
    assert external.ports == () and external.external_name == "db.example.com"


def test_target_port_defaults_to_port() -> None:
    svc = parse(raw_service({"name": "http", "port": 80}))
    assert svc.ports[0].target_port == 80


def test_named_target_port_stays_a_string() -> None:
    svc = parse(raw_service({"name": "http", "port": 80, "targetPort": "http-web"}))
    assert svc.ports[0].target_port == "http-web"


def test_numeric_string_target_port_becomes_an_int() -> None:
    svc = parse(raw_service({"name": "http", "port": 80, "targetPort": "8080"}))
    assert svc.ports[0].target_port == 8080
    assert isinstance(svc.ports[0].target_port, int)


@pytest.mark.parametrize("target", [0, 70000, "70000"])
def test_out_of_range_target_port(target: Any) -> None:
    raw = raw_service({"name": "http", "port": 80, "targetPort": target})
    assert error_field(raw) == "spec.ports[0].targetPort"


def test_selector_must_be_a_map_of_strings() -> None:
    raw = raw_service({"name": "http", "port": 80}, selector={"app": 1})
    assert error_field(raw).startswith("spec.selector")


def test_port_protocol_is_decided_at_parse_time() -> None:
    svc = parse(
        raw_service(
            {"name": "http-web", "port": 80},
            {"name": "db", "port": 5432, "appProtocol": "tcp"},
            {"name": "grpc", "port": 9000},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        )
    )
    assert [p.protocol for p in svc.ports] == [
        Protocol.HTTP,
        Protocol.TCP,
        Protocol.GRPC,
        Protocol.UDP,
    ]
