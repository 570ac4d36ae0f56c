"""istiod's validation, both ways: valid Istio config istiolite used to refuse, and invalid
config it used to accept (the cases of Istio's own validation test data and istio.io pages)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from istiolite.model.kinds import parse_object
from istiolite.model.serviceentry import ServiceEntry
from istiolite.model.validation import ValidationError
from istiolite.model.workloadentry import WorkloadEntry
from istiolite.push.context import PushContext


def load(text: str) -> dict[str, Any]:
    raw = yaml.safe_load(text)
    assert isinstance(raw, dict)
    return raw


def entry(spec: str) -> dict[str, Any]:
    return load(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: ext, namespace: shop}\n" + spec
    )


def rule(spec: str) -> dict[str, Any]:
    return load(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: ratings, namespace: shop}\n" + spec
    )


VALID = {
    "service entry without ports": entry("spec: {hosts: [example.com]}"),
    "unix endpoint with STATIC": entry(
        "spec:\n  hosts: [uds.local]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"
        "  resolution: STATIC\n  endpoints: [{address: 'unix:///var/run/example/socket'}]\n"
    ),
    "http2KeepAlive": rule(
        "spec:\n  host: ratings.prod.svc.cluster.local\n  trafficPolicy:\n"
        "    connectionPool: {http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}\n"
    ),
    "warmup in bounds": rule(
        "spec:\n  host: ratings\n  trafficPolicy:\n    loadBalancer:\n"
        "      warmup: {duration: 300s, minimumPercent: 5.0, aggression: 5.0}\n"
    ),
    "service entry host with a suffix wildcard": entry("spec: {hosts: ['*x']}"),
    "upper-case virtual service host": load(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: web, namespace: shop}\n"
        "spec: {hosts: [Web.Example.COM], http: [{route: [{destination: {host: web}}]}]}\n"
    ),
}


@pytest.mark.parametrize("raw", VALID.values(), ids=VALID.keys())
def test_valid_istio_config_is_accepted(raw: dict[str, Any]) -> None:
    parse_object(raw)


def test_upper_case_hosts_are_matched_lower_cased() -> None:
    _, vs = parse_object(VALID["upper-case virtual service host"])
    assert vs.hosts == ("web.example.com",)


def test_unix_endpoint_of_a_static_entry_is_a_socket_endpoint() -> None:
    from istiolite.networking.typed import socket_address

    _, se = parse_object(VALID["unix endpoint with STATIC"])
    assert isinstance(se, ServiceEntry)
    (endpoint,) = se.endpoints
    address = socket_address(endpoint.address, 80)
    assert address.pipe.path == "/var/run/example/socket"
    assert not address.HasField("socket_address")


def test_workload_entry_on_a_network_without_address_is_a_warning() -> None:
    raw = load(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
        "metadata: {name: vm, namespace: shop}\n"
        "spec: {network: vm-net, labels: {app: web}, serviceAccount: web}\n"
    )
    key, we = parse_object(raw)
    assert isinstance(we, WorkloadEntry) and we.address == ""
    warnings = dict(we.meta.unapplied)
    assert "vm-net" in warnings["spec.address"]
    # It gives no endpoint (an empty address would be refused by Envoy), and the warning shows.
    ctx = PushContext({key: we}, domain="cluster.local", version="t")
    assert ctx.workload_entries_in("shop") == []
    assert any(w.field == "spec.address" for w in ctx.reference_warnings())


def test_workload_entry_without_address_or_network_is_refused() -> None:
    raw = load(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
        "metadata: {name: vm, namespace: shop}\nspec: {labels: {app: web}}\n"
    )
    with pytest.raises(ValidationError) as err:
        parse_object(raw)
    assert err.value.field == "spec.address"


INVALID = {
    "wildcard host": (entry("spec: {hosts: ['*']}"), "spec.hosts[0]"),
    "duplicate port name": (
        entry("spec: {hosts: [example.com], ports: [{name: a, number: 1}, {name: a, number: 12}]}"),
        "spec.ports[1].name",
    ),
    "duplicate port number": (
        entry("spec: {hosts: [example.com], ports: [{name: a, number: 1}, {name: b, number: 1}]}"),
        "spec.ports[1].number",
    ),
    "NONE with endpoints": (
        entry("spec: {hosts: [example.com], resolution: NONE, endpoints: [{address: 1.2.3.4}]}"),
        "spec.endpoints",
    ),
    "DNS_ROUND_ROBIN with several endpoints": (
        entry(
            "spec:\n  hosts: [example.com]\n  resolution: DNS_ROUND_ROBIN\n"
            "  endpoints: [{address: sub1.example.com}, {address: sub2.example.com}]\n"
        ),
        "spec.endpoints",
    ),
    "wildcard selector value": (
        entry("spec: {hosts: [example.com], workloadSelector: {labels: {val: '*'}}}"),
        "spec.workloadSelector.labels.val",
    ),
    "unix endpoints need exactly one port": (
        entry(
            "spec:\n  hosts: [uds.local]\n  resolution: STATIC\n"
            "  endpoints: [{address: 'unix:///var/run/example/socket'}]\n"
        ),
        "spec.ports",
    ),
    "warmup minimumPercent above 100": (
        rule(
            "spec:\n  host: ratings\n  trafficPolicy:\n    loadBalancer:\n"
            "      warmup: {duration: 300s, minimumPercent: 150.0}\n"
        ),
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
    ),
    "warmup without duration": (
        rule(
            "spec:\n  host: ratings\n  trafficPolicy:\n    loadBalancer:\n"
            "      warmup: {minimumPercent: 5.0}\n"
        ),
        "spec.trafficPolicy.loadBalancer.warmup.duration",
    ),
    "empty portLevelMtls": (
        load(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
            "metadata: {name: p, namespace: shop}\n"
            "spec: {selector: {matchLabels: {foo: bar}}, portLevelMtls: {}}\n"
        ),
        "spec.portLevelMtls",
    ),
    "jwt presence not an enum value": (
        load(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
            "metadata: {name: r, namespace: shop}\n"
            "spec: {jwtRules: [{issuer: example, presence: MANDATORY}]}\n"
        ),
        "spec.jwtRules[0].presence",
    ),
    "warmup aggression below 1": (
        rule(
            "spec:\n  host: ratings\n  trafficPolicy:\n    loadBalancer:\n"
            "      warmup: {duration: 300s, aggression: 0.3}\n"
        ),
        "spec.trafficPolicy.loadBalancer.warmup.aggression",
    ),
}


@pytest.mark.parametrize(("raw", "field"), INVALID.values(), ids=INVALID.keys())
def test_invalid_istio_config_is_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_object(raw)
    assert err.value.field == field
