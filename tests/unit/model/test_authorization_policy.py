"""AuthorizationPolicy parsing and validation: istiod's rules, errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.authorization_policy import AuthorizationPolicy, parse_authorization_policy
from istiolite.model.validation import ValidationError


def policy(spec: dict[str, Any], namespace: str = "shop", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": namespace, **meta},
        "spec": spec,
    }


def parse(spec: dict[str, Any], namespace: str = "shop", **meta: Any) -> AuthorizationPolicy:
    return parse_authorization_policy(policy(spec, namespace, **meta))


def error(spec: dict[str, Any], **meta: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse(spec, **meta)
    return caught.value


def from_source(**source: Any) -> dict[str, Any]:
    return {"rules": [{"from": [{"source": source}]}]}


def to_operation(**operation: Any) -> dict[str, Any]:
    return {"rules": [{"to": [{"operation": operation}]}]}


def test_defaults_and_actions() -> None:
    p = parse({})
    assert (p.action, p.rules, p.selector, p.dry_run) == ("ALLOW", (), None, False)
    assert parse({"action": "AUDIT", "rules": [{}]}).action == "AUDIT"
    assert parse({}, annotations={"istio.io/dry-run": "true"}).dry_run


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"action": "CUSTOM", "provider": {"name": "x"}}, "spec.action", "not supported"),
        ({"action": "REJECT"}, "spec.action", "ALLOW, DENY or AUDIT"),
        ({"action": "DENY", "provider": {"name": "x"}}, "spec.provider", "must not be set"),
        (
            from_source(ipBlocks=["10.0.0.0/33"]),
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "bad CIDR",
        ),
        (
            from_source(notRemoteIpBlocks=["1.2.3"]),
            "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
            "bad IP",
        ),
        (
            from_source(principals=["spiffe://cluster.local/ns/a/sa/b"]),
            "spec.rules[0].from[0].source.principals[0]",
            "without 'spiffe://'",
        ),
        (
            from_source(principals=["cluster.local/*/sa/b"]),
            "spec.rules[0].from[0].source.principals[0]",
            "wildcard",
        ),
        (from_source(namespaces=[""]), "spec.rules[0].from[0].source.namespaces[0]", "empty"),
        (
            from_source(serviceAccounts=["a/b/c"]),
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "namespace/serviceAccount",
        ),
        (
            from_source(serviceAccounts=["a"], namespaces=["x"]),
            "spec.rules[0].from[0].source",
            "serviceAccounts with namespaces",
        ),
        (
            {"rules": [{"from": [{"source": {}}]}]},
            "spec.rules[0].from[0].source",
            "must not be empty",
        ),
        ({"rules": [{"from": []}]}, "spec.rules[0].from", "must not be empty"),
        ({"rules": [{"to": [{}]}]}, "spec.rules[0].to[0].operation", "is required"),
        (to_operation(ports=["http"]), "spec.rules[0].to[0].operation.ports[0]", "bad port"),
        (to_operation(notPorts=["70000"]), "spec.rules[0].to[0].operation.notPorts[0]", "bad port"),
        (
            to_operation(paths=["/a/{**}/{*}"]),
            "spec.rules[0].to[0].operation.paths[0]",
            "last operator",
        ),
        (to_operation(paths=["/a/*/b"]), "spec.rules[0].to[0].operation.paths[0]", "wildcard"),
        (to_operation(hosts=["a\nb"]), "spec.rules[0].to[0].operation.hosts[0]", "CR, LF"),
        (
            {"rules": [{"when": [{"key": "source.color", "values": ["x"]}]}]},
            "spec.rules[0].when[0].key",
            "unknown attribute",
        ),
        (
            {"rules": [{"when": [{"key": "request.headers", "values": ["x"]}]}]},
            "spec.rules[0].when[0].key",
            "a[b]",
        ),
        (
            {"rules": [{"when": [{"key": "destination.labels[app]", "values": ["x"]}]}]},
            "spec.rules[0].when[0].key",
            "workload selector",
        ),
        (
            {"rules": [{"when": [{"key": "source.ip"}]}]},
            "spec.rules[0].when[0]",
            "values or notValues",
        ),
        (
            {"rules": [{"when": [{"key": "destination.port", "values": ["x"]}]}]},
            "spec.rules[0].when[0].values[0]",
            "bad port",
        ),
        ({"selector": {"matchLabels": {"app": "*"}}}, "spec.selector.matchLabels.app", "wildcards"),
        (
            {
                "selector": {"matchLabels": {"a": "b"}},
                "targetRefs": [
                    {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "g"}
                ],
            },
            "spec.targetRefs",
            "only one",
        ),
        (
            {"targetRefs": [{"kind": "Deployment", "name": "g"}]},
            "spec.targetRefs[0].kind",
            "must be one of",
        ),
        (
            {"targetRefs": [{"kind": "Service", "name": "g", "namespace": "x"}]},
            "spec.targetRefs[0].namespace",
            "cross-namespace",
        ),
    ],
)
def test_invalid_policies_name_the_field(spec: dict[str, Any], field: str, words: str) -> None:
    err = error(spec)
    assert err.field == field
    assert words in err.message


def test_bad_dry_run_annotation() -> None:
    err = error({}, annotations={"istio.io/dry-run": "maybe"})
    assert err.field == "metadata.annotations.istio.io/dry-run"


def test_values_are_bounded() -> None:
    err = error(from_source(principals=[f"td/ns/a/sa/{i}" for i in range(300)]))
    assert "more than 256" in err.message


def test_a_namespace_that_needs_a_too_large_regex_is_refused() -> None:
    # Each '.' is escaped in the regex: 600 characters become a pattern past RE2's bound.
    err = error(from_source(namespaces=["." * 600]))
    assert err.field == "spec.rules[0].from[0].source.namespaces[0]"
    assert "regex" in err.message


def test_selection_root_namespace_selector_and_target_refs() -> None:
    mesh_wide = parse({}, namespace="istio-system")
    assert mesh_wide.applies_to("anywhere", {})
    selected = parse({"selector": {"matchLabels": {"app": "api"}}})
    assert selected.applies_to("shop", {"app": "api", "v": "1"})
    assert not selected.applies_to("shop", {"app": "web"})
    assert not selected.applies_to("other", {"app": "api"})  # its own namespace only
    root_selected = parse({"selector": {"matchLabels": {"app": "api"}}}, namespace="istio-system")
    assert root_selected.applies_to("other", {"app": "api"})
    gateway = parse(
        {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]}
    )
    gw_labels = {"gateway.networking.k8s.io/gateway-name": "gw"}
    assert gateway.applies_to("shop", gw_labels)
    assert not gateway.applies_to("shop", {"app": "api"})  # not a Gateway API gateway
    assert not gateway.applies_to("other", gw_labels)
    service = parse({"targetRefs": [{"kind": "Service", "name": "api"}]})
    assert not service.applies_to("shop", {"app": "api"})
    assert any("waypoint" in message for _, message in service.warnings())


def test_warnings_for_http_only_rules_and_empty_deny() -> None:
    deny = parse({"action": "DENY", **to_operation(paths=["/admin/*"])})
    [(field, message)] = deny.warnings()
    assert field == "spec.rules[0]" and "HTTP-only paths" in message and "denies" in message
    scoped = parse({"action": "DENY", **to_operation(paths=["/admin/*"], ports=["8080"])})
    assert scoped.warnings() == []
    assert "never triggers" in parse({"action": "DENY"}).warnings()[0][1]
