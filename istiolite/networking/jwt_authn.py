"""RequestAuthentication → Envoy's `envoy.filters.http.jwt_authn`, as istiod builds it
(convertToEnvoyJwtConfig): one provider per jwtRule, rules sorted by issuer and named
`origins-<i>`; keys always inline (`local_jwks`): a `jwks` as written, a `jwksUri`'s as the JWKS
fetcher last got them, or, while none are known, a key set no token verifies against, so such
tokens get 401 rather than the filter being refused.

The requirement lets a request without a token through (authorization decides, from the
verified payload Envoy keeps in dynamic metadata `envoy.filters.http.jwt_authn` → `payload`) and
answers 401 to one whose token does not verify: `{provider OR allow_missing}` for one provider;
for several, `ANY(P1, P2, …, ALL({P1 OR allow_missing}, {P2 OR allow_missing}, …))` — the
inner AND demands that every token present is valid, the outer ORs cover providers that read
the same location.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from google.protobuf import any_pb2, empty_pb2

from istiolite.model.jwks import PUBLIC_ONLY_JWKS
from istiolite.model.requestauthentication import JwtRule, RequestAuthentication
from istiolite.networking.guard import guarded, object_name
from istiolite.push.context import PushContext

JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
# Where the verified payload goes (metadata key under JWT_AUTHN_FILTER): AuthorizationPolicy's
# requestPrincipals and request.auth.claims read it there.
PAYLOAD_METADATA_KEY = "payload"
# Claims Envoy splits on spaces in that metadata, always (istiod's buildSpaceDelimitedClaims).
DEFAULT_SPACE_DELIMITED_CLAIMS = ("permission", "scope")


def jwt_authn_filter(
    ctx: PushContext, policies: Sequence[RequestAuthentication], *, clear_route_cache: bool
) -> hcm.HttpFilter | None:
    """The filter for the policies that apply to one workload (None: no jwtRules at all).
    `clear_route_cache`: gateways (istiod sets it for every proxy but sidecars)."""
    # Stable sort: rules of one issuer keep their policies' order (namespace, name).
    rules = sorted(
        ((rule, policy) for policy in policies for rule in policy.jwt_rules),
        key=lambda item: item[0].issuer,
    )
    providers = []
    for rule, policy in rules:
        # A rule that fails to translate is left out alone (and reported), as a missing token.
        built = guarded(
            partial(_provider, ctx, rule, clear_route_cache),
            object_name("RequestAuthentication", policy),
            field=f"spec.jwtRules[{policy.jwt_rules.index(rule)}]",
            dropped="its JWT provider",
        )
        if built is not None:
            providers.append(built)
    if not providers:
        return None
    config = jwt.JwtAuthentication(bypass_cors_preflight=True)
    each: list[jwt.JwtRequirement] = []
    for i, provider in enumerate(providers):
        name = f"origins-{i}"
        config.providers[name].CopyFrom(provider)
        each.append(jwt.JwtRequirement(provider_name=name))
    optional = [
        jwt.JwtRequirement(
            requires_any=jwt.JwtRequirementOrList(
                requirements=[provider, jwt.JwtRequirement(allow_missing=empty_pb2.Empty())]
            )
        )
        for provider in each
    ]
    if len(optional) == 1:
        requires = optional[0]
    else:
        requires = jwt.JwtRequirement(
            requires_any=jwt.JwtRequirementOrList(
                requirements=[
                    *each,
                    jwt.JwtRequirement(
                        requires_all=jwt.JwtRequirementAndList(requirements=optional)
                    ),
                ]
            )
        )
    config.rules.append(jwt.RequirementRule(match=rc.RouteMatch(prefix="/"), requires=requires))
    # `providers` is a map: packed with deterministic serialization, so the same config gives
    # the same bytes (and resource version) in every process.
    packed = any_pb2.Any(
        type_url=f"type.googleapis.com/{config.DESCRIPTOR.full_name}",
        value=config.SerializeToString(deterministic=True),
    )
    return hcm.HttpFilter(name=JWT_AUTHN_FILTER, typed_config=packed)


def _provider(ctx: PushContext, rule: JwtRule, clear_route_cache: bool) -> jwt.JwtProvider:
    provider = jwt.JwtProvider(
        issuer=rule.issuer,
        audiences=list(rule.audiences),
        forward=rule.forward_original_token,
        forward_payload_header=rule.output_payload_to_header,
        payload_in_metadata=PAYLOAD_METADATA_KEY,
        clear_route_cache=clear_route_cache,
        from_params=list(rule.from_params),
        from_cookies=list(rule.from_cookies),
        local_jwks=base_pb2.DataSource(inline_string=_keys(ctx, rule)),
    )
    provider.normalize_payload_in_metadata.space_delimited_claims.extend(
        sorted(set(rule.space_delimited_claims or ()) | set(DEFAULT_SPACE_DELIMITED_CLAIMS))
    )
    for claim in rule.output_claim_to_headers:
        provider.claim_to_headers.add(header_name=claim.header, claim_name=claim.claim)
    for header in rule.from_headers:
        provider.from_headers.add(name=header.name, value_prefix=header.prefix)
    return provider


def _keys(ctx: PushContext, rule: JwtRule) -> str:
    """The key set to inline: the rule's own, else the fetched one, else one nothing verifies."""
    if rule.jwks is not None:
        return rule.jwks.text
    if rule.jwks_uri:
        found = ctx.jwks_key_set(rule.jwks_uri)
        if found is not None and found.keys:
            return found.keys
    return PUBLIC_ONLY_JWKS
