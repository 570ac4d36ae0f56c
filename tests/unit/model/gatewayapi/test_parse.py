"""Gateway API objects parse under the versions each kind is served with, are keyed apart from
Istio's kinds, and bad input is refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.gatewayapi.gateway import KubeGateway
from istiolite.model.gatewayapi.routes import Route
from istiolite.model.kinds import parse_object
from istiolite.model.meta import ObjectKey
from istiolite.model.validation import ValidationError

GW = "gateway.networking.k8s.io"


def _obj(kind: str, spec: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/{version}",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "web"},
        "spec": spec,
    }


GATEWAY = {
    "gatewayClassName": "istio",
    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
}
ROUTE = {"parentRefs": [{"name": "edge"}], "rules": [{"backendRefs": [{"name": "a", "port": 80}]}]}


@pytest.mark.parametrize(
    ("kind", "version", "spec", "key_kind"),
    [
        ("Gateway", "v1", GATEWAY, "KubernetesGateway"),
        ("Gateway", "v1beta1", GATEWAY, "KubernetesGateway"),
        ("HTTPRoute", "v1", ROUTE, "HTTPRoute"),
        ("HTTPRoute", "v1beta1", ROUTE, "HTTPRoute"),
        ("GRPCRoute", "v1", ROUTE, "GRPCRoute"),
        ("TCPRoute", "v1alpha2", ROUTE, "TCPRoute"),
        ("TLSRoute", "v1alpha2", {**ROUTE, "hostnames": ["a.example.com"]}, "TLSRoute"),
        (
            "ReferenceGrant",
            "v1beta1",
            {
                "from": [{"group": GW, "kind": "HTTPRoute", "namespace": "a"}],
                "to": [{"group": "", "kind": "Service"}],
            },
            "ReferenceGrant",
        ),
    ],
)
def test_kinds_parse_under_their_versions(
    kind: str, version: str, spec: dict[str, Any], key_kind: str
) -> None:
    key, _ = parse_object(_obj(kind, spec, version))
    assert key == ObjectKey(key_kind, "web", "x")


def test_gateway_api_gateway_is_not_istios() -> None:
    _, gw = parse_object(_obj("Gateway", GATEWAY))
    assert isinstance(gw, KubeGateway)
    istio = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "x", "namespace": "web"},
        "spec": {
            "servers": [
                {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
            ]
        },
    }
    key, obj = parse_object(istio)
    assert key.kind == "Gateway" and not isinstance(obj, KubeGateway)


def test_unserved_version_is_refused_naming_apiversion() -> None:
    with pytest.raises(ValidationError) as err:
        parse_object(_obj("HTTPRoute", ROUTE, "v1alpha1"))
    assert err.value.field == "apiVersion"


def _rule(**extra: Any) -> dict[str, Any]:
    return {"parentRefs": [{"name": "edge"}], "rules": [extra]}


@pytest.mark.parametrize(
    ("kind", "spec", "field"),
    [
        ("Gateway", {"gatewayClassName": "istio"}, "spec.listeners"),
        ("Gateway", {"listeners": GATEWAY["listeners"]}, "spec.gatewayClassName"),
        (
            "Gateway",
            {
                "gatewayClassName": "istio",
                "listeners": [{"name": "s", "port": 443, "protocol": "HTTPS"}],
            },
            "spec.listeners[0].tls",
        ),
        (
            "Gateway",
            {
                "gatewayClassName": "istio",
                "listeners": [{"name": "s", "port": 443, "protocol": "HTTPS", "tls": {}}],
            },
            "spec.listeners[0].tls.certificateRefs",
        ),
        (
            "Gateway",
            {"gatewayClassName": "istio", "listeners": [GATEWAY["listeners"][0]] * 2},
            "spec.listeners[1].name",
        ),
        (
            "Gateway",
            {
                "gatewayClassName": "istio",
                "listeners": [{"name": "h", "port": 80, "protocol": "HTTP", "hostname": "A B"}],
            },
            "spec.listeners[0].hostname",
        ),
        (
            "HTTPRoute",
            _rule(matches=[{"path": {"type": "Exact", "value": "x"}}]),
            "spec.rules[0].matches[0].path.value",
        ),
        (
            "HTTPRoute",
            _rule(matches=[{"path": {"type": "RegularExpression", "value": "(?=a)"}}]),
            "spec.rules[0].matches[0].path.value",
        ),
        ("HTTPRoute", _rule(matches=[{"method": "FETCH"}]), "spec.rules[0].matches[0].method"),
        ("HTTPRoute", _rule(backendRefs=[{"name": "a"}]), "spec.rules[0].backendRefs[0].port"),
        (
            "HTTPRoute",
            _rule(backendRefs=[{"name": "a", "port": 80, "weight": -1}]),
            "spec.rules[0].backendRefs[0].weight",
        ),
        (
            "HTTPRoute",
            _rule(filters=[{"type": "ExtensionRef", "extensionRef": {}}]),
            "spec.rules[0].filters[0].type",
        ),
        (
            "HTTPRoute",
            _rule(filters=[{"type": "URLRewrite"}]),
            "spec.rules[0].filters[0].urlRewrite",
        ),
        (
            "HTTPRoute",
            _rule(
                filters=[
                    {
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {"set": [{"name": ":path", "value": "/"}]},
                    }
                ]
            ),
            "spec.rules[0].filters[0].requestHeaderModifier.set[0].name",
        ),
        ("HTTPRoute", _rule(timeouts={"request": "1 minute"}), "spec.rules[0].timeouts.request"),
        (
            "HTTPRoute",
            _rule(timeouts={"request": "1s", "backendRequest": "2s"}),
            "spec.rules[0].timeouts.backendRequest",
        ),
        ("HTTPRoute", {"parentRefs": [{"name": "a"}, {"name": "a"}]}, "spec.parentRefs"),
        ("HTTPRoute", {"hostnames": ["*"]}, "spec.hostnames[0]"),
        ("GRPCRoute", _rule(matches=[{"method": {}}]), "spec.rules[0].matches[0].method"),
        ("TLSRoute", {"rules": [{"backendRefs": [{"name": "a", "port": 1}]}]}, "spec.hostnames"),
        ("TCPRoute", {"rules": [{}]}, "spec.rules[0].backendRefs"),
        (
            "ReferenceGrant",
            {"from": [{"kind": "HTTPRoute"}], "to": [{"kind": "Service"}]},
            "spec.from[0].namespace",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(kind: str, spec: dict[str, Any], field: str) -> None:
    version = "v1alpha2" if kind in ("TLSRoute", "TCPRoute") else "v1beta1"
    if kind in ("Gateway", "HTTPRoute", "GRPCRoute"):
        version = "v1"
    with pytest.raises(ValidationError) as err:
        parse_object(_obj(kind, spec, version))
    assert err.value.field == field


def test_grpc_method_match_becomes_a_path() -> None:
    spec = _rule(matches=[{"method": {"service": "pkg.Echo", "method": "Say"}}])
    _, route = parse_object(_obj("GRPCRoute", spec))
    assert isinstance(route, Route)
    path = route.rules[0].matches[0].path
    assert path is not None and (path.type, path.value) == ("Exact", "/pkg.Echo/Say")


def test_route_bounds_are_the_crds() -> None:
    many = {"parentRefs": [{"name": f"g{i}"} for i in range(33)]}
    with pytest.raises(ValidationError) as err:
        parse_object(_obj("HTTPRoute", many))
    assert err.value.field == "spec.parentRefs" and "at most 32" in err.value.message


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("1h30m", 5400.0), ("2s", 2.0), ("1m500ms", 60.5)]
)
def test_gep_durations(text: str, seconds: float) -> None:
    from istiolite.model.gatewayapi.routes import parse_gep_duration

    assert parse_gep_duration(text, "x") == seconds
