"""RequestAuthentication → jwt_authn: the filter istiod builds, where it goes (sidecar inbound HTTP
chains, gateway HTTP listeners; never outbound), keys inline or fetched, and what a change of a
policy or a fetched key set invalidates."""

from __future__ import annotations

import json
from typing import Any

from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)

from istiolite import type_urls
from istiolite.model.jwks import JWKS_KIND, PUBLIC_ONLY_JWKS, JwksKeySet
from istiolite.model.meta import ObjectKey, ObjectMeta
from istiolite.networking.generator import ConfigGenerator
from istiolite.networking.jwt_authn import JWT_AUTHN_FILTER
from istiolite.push.cache import ResourceCache
from istiolite.push.context import PushContext
from istiolite.push.dependencies import changed_deps
from tests.support import objects
from tests.support.jwt import SigningKey, jwks
from tests.unit.networking.helpers import Listener, listeners, router, sidecar

KEY = SigningKey("ES256")
URI = "https://keys.example.com/jwks"


def policy(
    name: str, namespace: str = "default", selector: dict[str, str] | None = None, *rules: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {"jwtRules": list(rules)}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def ingress_sidecar(port: int = 9080) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {
            "ingress": [
                {
                    "port": {"number": port, "protocol": "HTTP", "name": "http"},
                    "bind": "127.0.0.1",
                    "defaultEndpoint": "127.0.0.1:8080",
                }
            ],
            "egress": [{"hosts": ["./*"]}],
        },
    }


def gateway() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "istio-system"},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
            ],
        },
    }


def http_filters(listener: Listener) -> list[hcm.HttpFilter]:
    out = []
    for chain in listener.filter_chains:
        for f in chain.filters:
            if f.name == "envoy.filters.network.http_connection_manager":
                manager = hcm.HttpConnectionManager()
                f.typed_config.Unpack(manager)
                out.append(list(manager.http_filters))
    assert out, f"no HTTP chain in {listener.name}"
    assert all(chain == out[0] for chain in out)
    return out[0]


def jwt_config(listener: Listener) -> jwt.JwtAuthentication | None:
    found = [f for f in http_filters(listener) if f.name == JWT_AUTHN_FILTER]
    if not found:
        return None
    config = jwt.JwtAuthentication()
    found[0].typed_config.Unpack(config)
    return config


def inbound(ctx: PushContext, **labels: str) -> Listener:
    proxy = sidecar(labels=labels or {"app": "web"}, mode="NONE")
    return listeners(ctx, proxy)["127.0.0.1_9080"]


def test_one_rule_one_provider_token_optional_but_checked() -> None:
    ctx = objects.context(
        ingress_sidecar(),
        policy("jwt", "default", None, {"issuer": "iss", "jwks": jwks(KEY), "audiences": ["a"]}),
    )
    listener = inbound(ctx)
    names = [f.name for f in http_filters(listener)]
    assert names[0] == JWT_AUTHN_FILTER and names[-1] == "envoy.filters.http.router"
    config = jwt_config(listener)
    assert config is not None and config.bypass_cors_preflight
    provider = config.providers["origins-0"]
    assert provider.issuer == "iss" and list(provider.audiences) == ["a"]
    assert json.loads(provider.local_jwks.inline_string) == {"keys": [KEY.jwk()]}
    assert provider.payload_in_metadata == "payload"
    assert not provider.clear_route_cache  # sidecars: as istiod
    assert list(provider.normalize_payload_in_metadata.space_delimited_claims) == [
        "permission",
        "scope",
    ]
    [rule] = config.rules
    assert rule.match.prefix == "/"
    either = rule.requires.requires_any.requirements
    assert [r.WhichOneof("requires_type") for r in either] == ["provider_name", "allow_missing"]
    assert either[0].provider_name == "origins-0"


def test_several_rules_sorted_by_issuer_with_istiods_requirement() -> None:
    ctx = objects.context(
        ingress_sidecar(),
        policy("mesh", "istio-system", None, {"issuer": "zeta", "jwksUri": URI}),
        policy("own", "default", {"app": "web"}, {"issuer": "alpha", "jwks": jwks(KEY)}),
    )
    config = jwt_config(inbound(ctx))
    assert config is not None
    assert [config.providers[f"origins-{i}"].issuer for i in range(2)] == ["alpha", "zeta"]
    outer = config.rules[0].requires.requires_any.requirements
    assert [r.provider_name for r in outer[:2]] == ["origins-0", "origins-1"]
    inner = outer[2].requires_all.requirements
    assert [
        [r.WhichOneof("requires_type") for r in each.requires_any.requirements] for each in inner
    ] == [["provider_name", "allow_missing"]] * 2


def test_unfetched_keys_are_a_key_set_nothing_verifies_against_then_the_fetched_ones() -> None:
    raws = objects.parse(
        ingress_sidecar(), policy("jwt", "default", None, {"issuer": "i", "jwksUri": URI})
    )
    ctx = PushContext(raws, domain="cluster.local", version="1")
    config = jwt_config(inbound(ctx))
    assert config is not None
    assert config.providers["origins-0"].local_jwks.inline_string == PUBLIC_ONLY_JWKS
    fetched = JwksKeySet(ObjectMeta(URI, ""), URI, keys=jwks(KEY))
    ctx = PushContext(
        {**raws, ObjectKey(JWKS_KIND, "", URI): fetched}, domain="cluster.local", version="2"
    )
    config = jwt_config(inbound(ctx))
    assert config is not None
    assert config.providers["origins-0"].local_jwks.inline_string == jwks(KEY)


def test_policies_apply_only_where_they_select() -> None:
    ctx = objects.context(
        ingress_sidecar(),
        policy("other", "default", {"app": "other"}, {"issuer": "i", "jwks": jwks(KEY)}),
        policy("elsewhere", "shop", None, {"issuer": "i", "jwks": jwks(KEY)}),
    )
    assert jwt_config(inbound(ctx)) is None
    assert jwt_config(inbound(ctx, app="other")) is not None


def test_outbound_listeners_never_carry_it() -> None:
    service = objects.service(
        "reviews", ports=[objects.service_port("http", 9080)], selector={"app": "web"}
    )
    ctx = objects.context(
        service, policy("jwt", "default", None, {"issuer": "i", "jwks": jwks(KEY)})
    )
    found = listeners(ctx, sidecar(labels={"app": "web"}))
    assert JWT_AUTHN_FILTER in str(found["virtualInbound"])  # the inbound HTTP chain has it
    outbound = [name for name in found if name != "virtualInbound"]
    assert "0.0.0.0_9080" in outbound
    for name in outbound:
        assert JWT_AUTHN_FILTER not in str(found[name]), name


def test_gateways_get_it_with_route_cache_clearing() -> None:
    ctx = objects.context(
        gateway(),
        policy(
            "edge", "istio-system", {"istio": "ingressgateway"}, {"issuer": "i", "jwks": jwks(KEY)}
        ),
    )
    found = listeners(ctx, router())
    config = jwt_config(found["0.0.0.0_8080"])
    assert config is not None and config.providers["origins-0"].clear_route_cache
    ctx = objects.context(gateway())
    assert jwt_config(listeners(ctx, router())["0.0.0.0_8080"]) is None


def test_a_fetched_key_set_change_drops_only_the_listeners_that_inline_it() -> None:
    """Through the live path: the cache advanced by the changed key, as the Pusher does."""
    base = objects.parse(
        ingress_sidecar(),
        policy("jwt", "default", {"app": "web"}, {"issuer": "i", "jwksUri": URI}),
    )
    cache = ResourceCache()
    generator = ConfigGenerator(cache)
    old = PushContext(base, domain="cluster.local", version="1")
    web, other = (
        sidecar(labels={"app": "web"}, mode="NONE"),
        sidecar(pod="x", labels={"app": "x"}, mode="NONE"),
    )
    cache.advance(None, old, ())
    generator(old, web, type_urls.LISTENER)
    generator(old, other, type_urls.LISTENER)
    key = ObjectKey(JWKS_KIND, "", URI)
    new_objects = {**base, key: JwksKeySet(ObjectMeta(URI, ""), URI, keys=jwks(KEY))}
    new = old.derive(new_objects, [key], base, version="2")
    dropped = cache.advance(old, new, changed_deps([key], base, new_objects))
    assert dropped.dropped[type_urls.LISTENER] == 1  # web's listeners; not the other proxy's
    config = jwt_config(
        Listener.FromString(generator(new, web, type_urls.LISTENER)["127.0.0.1_9080"].payload)
    )
    assert config is not None
    assert config.providers["origins-0"].local_jwks.inline_string == jwks(KEY)


def test_fetch_failures_and_missing_keys_are_config_warnings() -> None:
    raws = objects.parse(
        policy("jwt", "default", None, {"issuer": "i", "jwksUri": URI}, {"issuer": "bare"})
    )
    offline = PushContext(raws, domain="cluster.local", version="1")
    # Offline (validate, render) nothing is fetched: only the rule without keys is reported.
    assert [(w.field, "OpenID" in w.message) for w in offline.reference_warnings()] == [
        ("spec.jwtRules[1]", True)
    ]
    for keys, says in (("", "tokens are rejected (401)"), (jwks(KEY), "last good keys")):
        failed = JwksKeySet(ObjectMeta(URI, ""), URI, keys=keys, error="status 503")
        ctx = PushContext(
            {**raws, ObjectKey(JWKS_KIND, "", URI): failed}, domain="cluster.local", version="2"
        )
        [warning] = [w for w in ctx.reference_warnings() if w.field.endswith("jwksUri")]
        assert warning.object == "RequestAuthentication default/jwt"
        assert "status 503" in warning.message and says in warning.message
