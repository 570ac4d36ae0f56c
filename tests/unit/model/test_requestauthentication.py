"""RequestAuthentication parsing: istiod's validation (each error names its field), JWK Set
checks, and which workloads a policy applies to."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from istiolite.model.jwks import parse_jwks
from istiolite.model.kinds import parse_object
from istiolite.model.requestauthentication import RequestAuthentication
from istiolite.model.validation import ValidationError
from tests.support.jwt import SigningKey, jwks

KEY = SigningKey("ES256")

BASE: dict[str, Any] = {
    "apiVersion": "security.istio.io/v1beta1",
    "kind": "RequestAuthentication",
    "metadata": {"name": "jwt", "namespace": "shop"},
    "spec": {
        "selector": {"matchLabels": {"app": "reviews"}},
        "jwtRules": [
            {
                "issuer": "https://issuer.example.com",
                "audiences": ["reviews"],
                "jwks": jwks(KEY),
                "fromHeaders": [{"name": "x-token", "prefix": "Bearer "}],
                "fromParams": ["token"],
                "fromCookies": ["session"],
                "outputPayloadToHeader": "x-payload",
                "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}],
                "forwardOriginalToken": True,
                "timeout": "3s",
                "spaceDelimitedClaims": ["roles"],
            }
        ],
    },
}


def parse(raw: dict[str, Any]) -> RequestAuthentication:
    _, obj = parse_object(raw)
    assert isinstance(obj, RequestAuthentication)
    return obj


def with_rule(**fields: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    rule = raw["spec"]["jwtRules"][0]
    for name, value in fields.items():
        if value is None:
            rule.pop(name, None)
        else:
            rule[name] = value
    return raw


def rejected(raw: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_object(raw)
    return info.value


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_a_full_policy_parses_in_both_versions(version: str) -> None:
    raw = copy.deepcopy(BASE)
    raw["apiVersion"] = f"security.istio.io/{version}"
    policy = parse(raw)
    rule = policy.jwt_rules[0]
    assert policy.selector == {"app": "reviews"}
    assert rule.issuer == "https://issuer.example.com"
    assert rule.audiences == ("reviews",)
    assert rule.jwks is not None and json.loads(rule.jwks.text) == {"keys": [KEY.jwk()]}
    assert (rule.from_headers[0].name, rule.from_headers[0].prefix) == ("x-token", "Bearer ")
    assert (rule.from_params, rule.from_cookies) == (("token",), ("session",))
    assert rule.output_payload_to_header == "x-payload"
    assert (rule.output_claim_to_headers[0].header, rule.output_claim_to_headers[0].claim) == (
        "x-sub",
        "sub",
    )
    assert rule.forward_original_token and rule.timeout == 3.0
    assert rule.space_delimited_claims == ("roles",)


def test_the_networking_group_is_refused() -> None:
    raw = copy.deepcopy(BASE)
    raw["apiVersion"] = "networking.istio.io/v1"
    assert rejected(raw).field == "apiVersion"


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"issuer": None, "jwks": None}, "spec.jwtRules[0].issuer", "issuer or jwksUri"),
        (
            {"jwksUri": "https://keys.example.com/jwks"},
            "spec.jwtRules[0].jwks",
            "only one of jwks or jwksUri",
        ),
        ({"jwks": None, "jwksUri": "ftp://keys.example.com"}, "spec.jwtRules[0].jwksUri", "ftp"),
        ({"jwks": None, "jwksUri": "keys.example.com/jwks"}, "spec.jwtRules[0].jwksUri", "scheme"),
        ({"jwks": None, "jwksUri": "https:///jwks"}, "spec.jwtRules[0].jwksUri", "no host"),
        ({"jwks": None, "jwksUri": "http://k:99999/"}, "spec.jwtRules[0].jwksUri", "not a valid"),
        (
            {"jwks": None, "jwksUri": "https://k.example.com/" + "a" * 2048},
            "spec.jwtRules[0].jwksUri",
            "longer than",
        ),
        ({"jwks": "not json"}, "spec.jwtRules[0].jwks", "not a JSON Web Key Set"),
        ({"jwks": '{"keys": "x"}'}, "spec.jwtRules[0].jwks", '"keys" list'),
        ({"jwks": '{"keys": []}'}, "spec.jwtRules[0].jwks", "no keys"),
        ({"jwks": '{"keys": [{"kty": "XX"}]}'}, "spec.jwtRules[0].jwks", "kty"),
        ({"jwks": '{"keys": [{"kty": "RSA", "e": "AQAB"}]}'}, "spec.jwtRules[0].jwks", "'n'"),
        ({"jwks": '{"keys": [{"kty": "RSA", "n": "a b", "e": "AQAB"}]}'}, "jwks", "base64url"),
        ({"jwks": "[" * 100_000}, "spec.jwtRules[0].jwks", "larger than"),
        ({"jwks": "[" * 50_000}, "spec.jwtRules[0].jwks", "not a JSON Web Key Set"),
        ({"audiences": [""]}, "spec.jwtRules[0].audiences[0]", "non-empty"),
        ({"fromHeaders": [{"prefix": "x"}]}, "spec.jwtRules[0].fromHeaders[0].name", "required"),
        ({"fromHeaders": [{"name": ":path"}]}, "spec.jwtRules[0].fromHeaders[0].name", "pseudo"),
        ({"fromParams": [""]}, "spec.jwtRules[0].fromParams[0]", "non-empty"),
        ({"fromCookies": [""]}, "spec.jwtRules[0].fromCookies[0]", "non-empty"),
        (
            {"outputClaimToHeaders": [{"header": "x y", "claim": "sub"}]},
            "spec.jwtRules[0].outputClaimToHeaders[0].header",
            "letters, digits",
        ),
        (
            {"outputClaimToHeaders": [{"header": "x-sub"}]},
            "spec.jwtRules[0].outputClaimToHeaders[0].claim",
            "required",
        ),
        (
            {"outputPayloadToHeader": "x\r\nevil: 1"},
            "spec.jwtRules[0].outputPayloadToHeader",
            "CR, LF",
        ),
        ({"timeout": "0s"}, "spec.jwtRules[0].timeout", "at least 1ms"),
        ({"timeout": "soon"}, "spec.jwtRules[0].timeout", "duration"),
        ({"forwardOriginalToken": "yes"}, "spec.jwtRules[0].forwardOriginalToken", "true or"),
        ({"presenc": "REQUIRED"}, "spec.jwtRules[0].presenc", 'did you mean "presence"'),
    ],
)
def test_invalid_rules_name_the_field(fields: dict[str, Any], field: str, text: str) -> None:
    err = rejected(with_rule(**fields))
    assert field in err.field
    assert text in err.message


def test_selector_and_target_refs_exclude_each_other() -> None:
    raw = copy.deepcopy(BASE)
    raw["spec"]["targetRefs"] = [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}
    ]
    err = rejected(raw)
    assert err.field == "spec.selector" and "only one of" in err.message
    raw["spec"].pop("selector")
    raw["spec"]["targetRefs"][0]["namespace"] = "other"
    assert rejected(raw).field == "spec.targetRefs[0].namespace"


def test_wildcards_in_the_selector_are_refused() -> None:
    raw = copy.deepcopy(BASE)
    raw["spec"]["selector"]["matchLabels"] = {"app": "rev*"}
    assert rejected(raw).field == "spec.selector.matchLabels.app"


def test_jwks_uri_alone_and_the_snake_case_spelling() -> None:
    rule = parse(with_rule(jwks=None, jwks_uri="https://keys.example.com/jwks")).jwt_rules[0]
    assert rule.jwks_uri == "https://keys.example.com/jwks" and rule.jwks is None
    assert rule.timeout == 3.0
    rule = parse(with_rule(jwks=None, issuer=None, jwksUri="http://k.example.com")).jwt_rules[0]
    assert rule.issuer == "" and rule.timeout == 3.0


def test_private_key_members_are_dropped_and_reported() -> None:
    secret = {**KEY.jwk(), "d": "c2VjcmV0"}
    policy = parse(with_rule(jwks=json.dumps({"keys": [secret]})))
    rule = policy.jwt_rules[0]
    assert rule.jwks is not None and "c2VjcmV0" not in rule.jwks.text
    note = "keys[0] holds private key material; only its public part is used"
    assert policy.unapplied() == [("spec.jwtRules[0].jwks", note)]


def test_the_presence_field_is_accepted_but_reported() -> None:
    _, obj = parse_object(with_rule(presence="REQUIRED"))
    assert [f for f, _ in obj.meta.unapplied] == ["spec.jwtRules[0].presence"]


def test_a_key_set_is_canonical() -> None:
    a = parse_jwks(json.dumps({"keys": [KEY.jwk()]}, indent=2), "jwks")
    b = parse_jwks(json.dumps({"keys": [dict(reversed(list(KEY.jwk().items())))]}), "jwks")
    assert a == b and a.key_count == 1


# --- which workloads a policy applies to ---------------------------------------------------------


def policy_in(namespace: str, selector: dict[str, str] | None = None, **spec: Any) -> Any:
    raw = copy.deepcopy(BASE)
    raw["metadata"]["namespace"] = namespace
    raw["spec"].pop("selector")
    if selector is not None:
        raw["spec"]["selector"] = {"matchLabels": selector}
    raw["spec"].update(spec)
    return parse(raw)


@pytest.mark.parametrize(
    ("namespace", "selector", "workload_ns", "labels", "applies"),
    [
        ("shop", None, "shop", {"app": "x"}, True),  # namespace-wide
        ("shop", None, "other", {"app": "x"}, False),
        ("istio-system", None, "other", {}, True),  # mesh-wide
        ("shop", {"app": "reviews"}, "shop", {"app": "reviews", "v": "1"}, True),
        ("shop", {"app": "reviews"}, "shop", {"app": "ratings"}, False),
        ("istio-system", {"app": "reviews"}, "shop", {"app": "reviews"}, True),
        # A Kubernetes Gateway API gateway takes only policies that name it by targetRef.
        ("shop", None, "shop", {"gateway.networking.k8s.io/gateway-name": "edge"}, False),
    ],
)
def test_selection_as_istiod(
    namespace: str,
    selector: dict[str, str] | None,
    workload_ns: str,
    labels: dict[str, str],
    applies: bool,
) -> None:
    assert policy_in(namespace, selector).applies_to(workload_ns, labels) is applies


def test_target_refs_select_gateway_api_gateways_only() -> None:
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}
    policy = policy_in("shop", targetRefs=[ref])
    assert policy.applies_to("shop", {"gateway.networking.k8s.io/gateway-name": "edge"})
    assert not policy.applies_to("shop", {"gateway.networking.k8s.io/gateway-name": "other"})
    assert not policy.applies_to("other", {"gateway.networking.k8s.io/gateway-name": "edge"})
    assert not policy.applies_to("shop", {"app": "edge"})
    service = policy_in("shop", targetRefs=[{"kind": "Service", "name": "reviews"}])
    assert not service.applies_to("shop", {"app": "reviews"})
    assert service.unapplied()[0][0] == "spec.targetRefs[0]"
