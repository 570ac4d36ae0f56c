"""AuthorizationPolicy -> RBAC translation, compared with what istiod's builder makes."""

from __future__ import annotations

from typing import Any

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as tcp_rbac_pb2
from google.protobuf import json_format

from istiolite.model.authorization_policy import AuthorizationPolicy, parse_authorization_policy
from istiolite.model.meta import ObjectKey
from istiolite.networking.authz import (
    authz_filters,
    authz_key,
    http_rbac_filters,
    rule_policy,
    tcp_rbac_filters,
)
from istiolite.push.context import PushContext


def parse(
    spec: dict[str, Any], name: str = "p", namespace: str = "shop", **meta: Any
) -> AuthorizationPolicy:
    return parse_authorization_policy(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace, **meta},
            "spec": spec,
        }
    )


def rule(
    spec: dict[str, Any], *, tcp: bool = False, action: str = "ALLOW"
) -> dict[str, Any] | None:
    p = parse({"action": action, "rules": [spec]})
    built = rule_policy(p, p.rules[0], tcp)
    return None if built is None else json_format.MessageToDict(built)


def principals(spec: dict[str, Any], **kw: Any) -> list[Any]:
    got = rule(spec, **kw)
    assert got is not None
    return list(got["principals"][0]["andIds"]["ids"])


def permissions(spec: dict[str, Any], **kw: Any) -> list[Any]:
    got = rule(spec, **kw)
    assert got is not None
    return list(got["permissions"][0]["andRules"]["rules"])


def authn(matcher: dict[str, Any]) -> dict[str, Any]:
    return {"authenticated": {"principalName": matcher}}


def test_principal_forms() -> None:
    ids = principals(
        {"from": [{"source": {"principals": ["td/ns/a/sa/b", "td/ns/a/*", "*/sa/admin", "*"]}}]}
    )
    assert ids == [
        {
            "orIds": {
                "ids": [
                    authn({"exact": "spiffe://td/ns/a/sa/b"}),
                    authn({"prefix": "spiffe://td/ns/a/"}),
                    authn({"safeRegex": {"regex": "spiffe://.*/sa/admin"}}),
                    authn({"safeRegex": {"regex": ".+"}}),
                ]
            }
        }
    ]


def test_not_forms_are_negated_ors_after_the_values() -> None:
    ids = principals({"from": [{"source": {"namespaces": ["a.b"], "notNamespaces": ["x*"]}}]})
    assert ids == [
        {"orIds": {"ids": [authn({"safeRegex": {"regex": r".*/ns/a\.b/.*"}})]}},
        {"notId": {"orIds": {"ids": [authn({"safeRegex": {"regex": ".*/ns/x.*/.*"}})]}}},
    ]


def test_source_fields_in_istiods_order_then_when() -> None:
    ids = principals(
        {
            "from": [
                {
                    "source": {
                        "ipBlocks": ["10.0.0.1"],
                        "remoteIpBlocks": ["10.1.0.0/16"],
                        "principals": ["p"],
                    }
                }
            ],
            "when": [{"key": "request.headers[x-a]", "values": ["v*"]}],
        }
    )
    assert [next(iter(i["orIds"]["ids"][0])) for i in ids] == [
        "authenticated",
        "remoteIp",
        "directRemoteIp",
        "header",
    ]
    assert ids[2]["orIds"]["ids"][0]["directRemoteIp"] == {
        "addressPrefix": "10.0.0.1",
        "prefixLen": 32,
    }
    assert ids[3]["orIds"]["ids"][0]["header"] == {"name": "x-a", "stringMatch": {"prefix": "v"}}


def test_paths_methods_hosts_ports() -> None:
    rules = permissions(
        {
            "to": [
                {
                    "operation": {
                        "hosts": ["Example.com", "*.example.org", "api.*", "h:8080"],
                        "methods": ["GET"],
                        "paths": ["/exact", "/prefix/*", "*.html", "*", "/t/{*}/x/{**}"],
                        "ports": ["80"],
                    }
                }
            ]
        }
    )
    hosts, methods, paths, ports = (r["orRules"]["rules"] for r in rules)
    assert [h["header"] for h in hosts] == [
        {
            "name": ":authority",
            "stringMatch": {"safeRegex": {"regex": r"(?i)Example\.com(:[0-9]{1,5})?"}},
        },
        {
            "name": ":authority",
            "stringMatch": {"safeRegex": {"regex": r"(?i).*\.example\.org(:[0-9]{1,5})?"}},
        },
        {"name": ":authority", "stringMatch": {"prefix": "api.", "ignoreCase": True}},
        {"name": ":authority", "stringMatch": {"exact": "h:8080", "ignoreCase": True}},
    ]
    assert methods == [{"header": {"name": ":method", "stringMatch": {"exact": "GET"}}}]
    assert [p.get("urlPath", {}).get("path") for p in paths[:4]] == [
        {"exact": "/exact"},
        {"prefix": "/prefix/"},
        {"suffix": ".html"},
        {"safeRegex": {"regex": ".+"}},
    ]
    assert paths[4]["uriTemplate"]["typedConfig"]["pathTemplate"] == "/t/*/x/**"
    assert ports == [{"destinationPort": 80}]


def test_request_principals_and_claims_read_jwt_authn_metadata() -> None:
    ids = principals(
        {
            "from": [{"source": {"requestPrincipals": ["https://iss.example/sub-1"]}}],
            "when": [{"key": "request.auth.claims[groups][0]", "values": ["admins"]}],
        }
    )
    iss, sub = ids[0]["andIds"]["ids"]
    assert iss["metadata"]["filter"] == "envoy.filters.http.jwt_authn"
    assert [s["key"] for s in iss["metadata"]["path"]] == ["payload", "iss"]
    assert iss["metadata"]["value"] == {"stringMatch": {"exact": "https://iss.example"}}
    assert sub["metadata"]["value"] == {"stringMatch": {"exact": "sub-1"}}
    claim = ids[1]["metadata"]
    assert [s["key"] for s in claim["path"]] == ["payload", "groups", "0"]
    assert claim["value"]["orMatch"]["valueMatchers"][0] == {
        "listMatch": {"oneOf": {"stringMatch": {"exact": "admins"}}}
    }


def test_when_keys_for_the_destination() -> None:
    rules = permissions(
        {
            "when": [
                {"key": "destination.ip", "values": ["10.0.0.0/8"]},
                {"key": "destination.port", "notValues": ["9000"]},
                {"key": "connection.sni", "values": ["*.svc"]},
                {"key": "experimental.envoy.filters.a.b[c]", "values": ["[x]"]},
            ]
        }
    )
    assert rules[0] == {
        "orRules": {"rules": [{"destinationIp": {"addressPrefix": "10.0.0.0", "prefixLen": 8}}]}
    }
    assert rules[1] == {"notRule": {"orRules": {"rules": [{"destinationPort": 9000}]}}}
    assert rules[2] == {"orRules": {"rules": [{"requestedServerName": {"suffix": ".svc"}}]}}
    assert rules[3]["metadata"]["filter"] == "envoy.filters.a.b"


def test_empty_rule_matches_everything() -> None:
    assert rule({}) == {
        "permissions": [{"andRules": {"rules": [{"any": True}]}}],
        "principals": [{"andIds": {"ids": [{"any": True}]}}],
    }


def test_http_only_fields_on_tcp_drop_an_allow_rule_and_widen_a_deny_rule() -> None:
    spec = {"from": [{"source": {"principals": ["p"]}}], "to": [{"operation": {"paths": ["/a"]}}]}
    assert rule(spec, tcp=True) is None
    deny = rule(spec, tcp=True, action="DENY")
    assert deny is not None
    assert deny["permissions"] == [{"andRules": {"rules": [{"any": True}]}}]
    assert deny["principals"][0]["andIds"]["ids"][0]["orIds"]["ids"][0]["authenticated"]
    # A rule without HTTP fields is the same on both.
    plain = {"from": [{"source": {"principals": ["p"]}}]}
    assert rule(plain, tcp=True) == rule(plain)


def _rbac(filters: Any, cls: Any) -> list[Any]:
    out = []
    for f in filters:
        config = cls()
        f.typed_config.Unpack(config)
        out.append(json_format.MessageToDict(config))
    return out


def test_filters_audit_then_deny_then_allow_with_dry_run_as_shadow() -> None:
    policies = [
        parse({"rules": [{}]}, name="allow"),
        parse({"action": "DENY", "rules": [{}]}, name="deny"),
        parse({"action": "AUDIT", "rules": [{}]}, name="audit"),
        parse(
            {"action": "DENY", "rules": [{}]},
            name="trial",
            annotations={"istio.io/dry-run": "true"},
        ),
        parse({}, name="nothing"),
    ]
    audit, deny, allow = _rbac(http_rbac_filters(policies), http_rbac_pb2.RBAC)
    assert audit["rules"]["action"] == "LOG"
    assert set(deny["rules"]["policies"]) == {"ns[shop]-policy[deny]-rule[0]"}
    assert set(deny["shadowRules"]["policies"]) == {"ns[shop]-policy[trial]-rule[0]"}
    assert deny["shadowRulesStatPrefix"] == "istio_dry_run_deny_"
    assert allow["rules"].get("action", "ALLOW") == "ALLOW"
    # An ALLOW policy without rules allows nothing: a policy that never matches.
    assert allow["rules"]["policies"]["ns[shop]-policy[nothing]-rule[0]"] == {
        "permissions": [{"notRule": {"any": True}}],
        "principals": [{"notId": {"any": True}}],
    }
    tcp = _rbac(tcp_rbac_filters(policies), tcp_rbac_pb2.RBAC)
    assert [t["statPrefix"] for t in tcp] == ["tcp."] * 3


def test_policies_that_apply_to_a_workload_and_the_cache_key() -> None:
    objects = {}
    for p in (
        parse({"action": "DENY", "rules": [{}]}, name="mesh", namespace="istio-system"),
        parse({"selector": {"matchLabels": {"app": "api"}}, "rules": [{}]}, name="api"),
        parse({"selector": {"matchLabels": {"app": "web"}}, "rules": [{}]}, name="web"),
        parse({"action": "DENY", "rules": [{}]}, name="other", namespace="billing"),
    ):
        objects[ObjectKey("AuthorizationPolicy", p.namespace, p.meta.name)] = p
    ctx = PushContext(objects, domain="cluster.local", version="1")
    assert authz_key(ctx, "shop", {"app": "api"}) == ("istio-system/mesh", "shop/api")
    assert authz_key(ctx, "shop", {"app": "db"}) == ("istio-system/mesh",)
    filters = authz_filters(ctx, "shop", {"app": "api"})
    assert len(filters.http) == len(filters.tcp) == 2  # DENY, then ALLOW
    assert (
        authz_filters(PushContext({}, domain="cluster.local", version="1"), "shop", {}).http == ()
    )
