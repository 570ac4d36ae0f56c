"""EndpointSlice parsing: the link to its Service, address checks, condition defaults."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.endpointslice import EndpointSlice
from istiolite.model.kinds import parse_object
from istiolite.model.validation import ValidationError


def raw_slice(
    *endpoints: dict[str, Any],
    address_type: str = "IPv4",
    labels: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-x1",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"} if labels is None else labels,
        },
        "addressType": address_type,
        "ports": ports if ports is not None else [{"name": "http", "port": 8080}],
        "endpoints": list(endpoints),
    }


def parse(raw: dict[str, Any]) -> EndpointSlice:
    _, obj = parse_object(raw)
    assert isinstance(obj, EndpointSlice)
    return obj


def error_field(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as err:
        parse_object(raw)
    return err.value.field


def test_slice_is_linked_to_its_service_by_label() -> None:
    eps = parse(raw_slice({"addresses": ["10.0.0.1"]}))
    assert eps.service_name == "web"
    assert eps.namespace == "shop"


def test_slice_without_service_name_label_is_rejected() -> None:
    field = error_field(raw_slice({"addresses": ["10.0.0.1"]}, labels={"app": "web"}))
    assert field == "metadata.labels[kubernetes.io/service-name]"


@pytest.mark.parametrize(
    ("address_type", "address"),
    [
        ("IPv4", "not-an-ip"),
        ("IPv4", "10.0.0.256"),
        ("IPv4", "fd00::1"),  # valid IP, wrong family
        ("IPv6", "10.0.0.1"),
    ],
)
def test_bad_or_mismatched_address_names_the_address(address_type: str, address: str) -> None:
    raw = raw_slice({"addresses": [address]}, address_type=address_type)
    assert error_field(raw) == "endpoints[0].addresses[0]"


def test_error_names_the_offending_endpoint_and_address() -> None:
    raw = raw_slice(
        {"addresses": ["10.0.0.1"]},
        {"addresses": ["10.0.0.2", "bogus"]},
    )
    assert error_field(raw) == "endpoints[1].addresses[1]"


def test_ipv6_slice_accepts_ipv6_addresses() -> None:
    eps = parse(raw_slice({"addresses": ["fd00::1"]}, address_type="IPv6"))
    assert eps.endpoints[0].addresses == ("fd00::1",)


def test_endpoint_needs_an_address() -> None:
    assert error_field(raw_slice({"addresses": []})) == "endpoints[0].addresses"


def test_unknown_address_type() -> None:
    assert error_field(raw_slice(address_type="IPv5")) == "addressType"


def test_missing_address_type() -> None:
    raw = raw_slice()
    del raw["addressType"]
    assert error_field(raw) == "addressType"


def test_bad_port_names_the_port() -> None:
    raw = raw_slice(ports=[{"name": "http", "port": 0}])
    assert error_field(raw) == "ports[0].port"


def test_nil_ready_means_ready_and_serving() -> None:
    eps = parse(
        raw_slice({"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"], "conditions": {}})
    )
    for endpoint in eps.endpoints:
        assert endpoint.ready is True
        assert endpoint.serving is True
        assert endpoint.terminating is False


def test_serving_defaults_to_ready() -> None:
    eps = parse(raw_slice({"addresses": ["10.0.0.1"], "conditions": {"ready": False}}))
    assert eps.endpoints[0].ready is False
    assert eps.endpoints[0].serving is False


def test_explicit_conditions_are_kept() -> None:
    eps = parse(
        raw_slice(
            {
                "addresses": ["10.0.0.1"],
                "conditions": {"ready": False, "serving": True, "terminating": True},
            }
        )
    )
    endpoint = eps.endpoints[0]
    assert (endpoint.ready, endpoint.serving, endpoint.terminating) == (False, True, True)


def test_condition_must_be_a_boolean() -> None:
    raw = raw_slice({"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}})
    assert error_field(raw) == "endpoints[0].conditions.ready"


def test_zone_node_and_target_ref_are_kept() -> None:
    eps = parse(
        raw_slice(
            {
                "addresses": ["10.0.0.1"],
                "zone": "eu-west-1a",
                "nodeName": "node-a",
                "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"},
            }
        )
    )
    endpoint = eps.endpoints[0]
    assert endpoint.zone == "eu-west-1a"
    assert endpoint.node_name == "node-a"
    assert endpoint.target_ref is not None
    assert (endpoint.target_ref.kind, endpoint.target_ref.name) == ("Pod", "web-1")


def test_port_protocol_defaults_to_tcp() -> None:
    eps = parse(raw_slice(ports=[{"name": "http", "port": 8080}]))
    assert eps.ports[0].protocol == "TCP"
