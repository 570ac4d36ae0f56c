"""Envoy matchers for AuthorizationPolicy values, shaped as istiod's authz/matcher package
makes them: Istio's `*` wildcards (whole value = presence, leading = suffix, trailing = prefix),
SPIFFE principals, JWT claims in jwt_authn's dynamic metadata, IP ranges, paths."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TypeAlias

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

from istiolite.model.authorization_policy import (
    host_has_port,
    host_regex,
    namespace_regex,
    principal_suffix_regex,
    service_account_regex,
    trust_domain_regex,
)
from istiolite.networking.typed import pack, uint32

SPIFFE_PREFIX = "spiffe://"
# RequestAuthentication's filter writes the verified JWT payload here (as istiod's).
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "payload"

Permission: TypeAlias = rbac_pb2.Permission
Principal: TypeAlias = rbac_pb2.Principal
StringMatcher: TypeAlias = string_pb2.StringMatcher


# --- strings ------------------------------------------------------------------------------------


def regex(pattern: str) -> StringMatcher:
    return StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def exact(value: str, ignore_case: bool = False) -> StringMatcher:
    return StringMatcher(exact=value, ignore_case=ignore_case)


def prefix(value: str, ignore_case: bool = False) -> StringMatcher:
    return StringMatcher(prefix=value, ignore_case=ignore_case)


def suffix(value: str, ignore_case: bool = False) -> StringMatcher:
    return StringMatcher(suffix=value, ignore_case=ignore_case)


MATCH_ANY = regex(".+")


def string(value: str, scheme: str = "") -> StringMatcher:
    """istiod's StringMatcherWithPrefix: `*` -> any non-empty text; `*x` -> ends with x (after
    `scheme`, via a regex); `x*` -> starts with scheme+x; else exactly scheme+x."""
    if value == "*":
        return MATCH_ANY
    if value.startswith("*"):
        if not scheme:
            return suffix(value[1:])
        return regex(principal_suffix_regex(value))
    if value.endswith("*"):
        return prefix(scheme + value[:-1])
    return exact(scheme + value)


def _value(matcher: StringMatcher) -> value_pb2.ValueMatcher:
    return value_pb2.ValueMatcher(string_match=matcher)


def any_of_strings(values: Sequence[str]) -> value_pb2.ValueMatcher:
    """istiod's StringOrMatcher (a single value stays a plain matcher)."""
    matchers = [_value(string(v)) for v in values]
    if len(matchers) == 1:
        return matchers[0]
    return value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=matchers))


# --- headers, hosts, paths ----------------------------------------------------------------------


def header(name: str, value: str) -> rc.HeaderMatcher:
    """`*` -> present; `*x` / `x*` -> suffix / prefix; else exact (case-sensitive)."""
    if value == "*":
        return rc.HeaderMatcher(name=name, present_match=True)
    if value.startswith("*"):
        return rc.HeaderMatcher(name=name, string_match=suffix(value[1:]))
    if value.endswith("*"):
        return rc.HeaderMatcher(name=name, string_match=prefix(value[:-1]))
    return rc.HeaderMatcher(name=name, string_match=exact(value))


def host(value: str) -> rc.HeaderMatcher:
    """The `:authority` for a policy host, case-insensitively. A host written without a port
    also matches the authority with one (`example.com` takes `example.com:8080`), so a client
    cannot step around a DENY by adding the port; a host written with a port is exact."""
    name = ":authority"
    if value == "*":
        return rc.HeaderMatcher(name=name, present_match=True)
    if value.endswith("*"):
        return rc.HeaderMatcher(name=name, string_match=prefix(value[:-1], ignore_case=True))
    if host_has_port(value):
        return rc.HeaderMatcher(name=name, string_match=exact(value, ignore_case=True))
    return rc.HeaderMatcher(name=name, string_match=regex(host_regex(value)))


def path(value: str) -> Permission:
    """Istio paths: exact, `/prefix/*`, `*suffix`, `*`; `{*}` / `{**}` templates go to Envoy's
    uri_template matcher (`*` / `**` there)."""
    if "{*}" in value or "{**}" in value:
        template = value.replace("{**}", "**").replace("{*}", "*")
        return Permission(
            uri_template=extension_pb2.TypedExtensionConfig(
                name="uri-template",
                typed_config=pack(
                    uri_template_match_pb2.UriTemplateMatchConfig(path_template=template)
                ),
            )
        )
    return Permission(url_path=path_pb2.PathMatcher(path=string(value)))


# --- addresses ----------------------------------------------------------------------------------


def cidr(value: str) -> address_pb2.CidrRange:
    """An address (a /32 or /128) or a CIDR range (validated by the model)."""
    network = ipaddress.ip_network(value, strict=False)
    if "/" not in value:
        address = value
    else:
        # istiod sends the address as written, with the prefix length of the range.
        address = value.partition("/")[0]
    return address_pb2.CidrRange(address_prefix=address, prefix_len=uint32(network.prefixlen))


# --- identities ---------------------------------------------------------------------------------


def authenticated(matcher: StringMatcher) -> Principal:
    """Matched against the peer certificate's URI SAN (else its subject)."""
    return Principal(authenticated=Principal.Authenticated(principal_name=matcher))


def principal(value: str) -> Principal:
    """`principals` / `source.principal`: `<trust-domain>/ns/<ns>/sa/<sa>`, scheme added."""
    return authenticated(string(value, SPIFFE_PREFIX))


def namespace(value: str) -> Principal:
    return authenticated(regex(namespace_regex(value)))


def service_account(policy_namespace: str, value: str) -> Principal:
    return authenticated(regex(service_account_regex(policy_namespace, value)))


def trust_domain(value: str) -> Principal:
    if value == "*":
        return authenticated(prefix(SPIFFE_PREFIX))
    if "*" not in value:
        return authenticated(prefix(f"{SPIFFE_PREFIX}{value}/"))
    return authenticated(regex(trust_domain_regex(value)))


# --- JWT claims (jwt_authn's dynamic metadata) --------------------------------------------------


def _path(keys: Sequence[str]) -> list[metadata_pb2.MetadataMatcher.PathSegment]:
    return [metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in keys]


def jwt_claim(claim: str, matcher: StringMatcher) -> Principal:
    """One string claim of the verified payload."""
    return Principal(
        metadata=metadata_pb2.MetadataMatcher(
            filter=JWT_FILTER, path=_path((JWT_PAYLOAD, claim)), value=_value(matcher)
        )
    )


def jwt_list_claim(claims: Sequence[str], value: value_pb2.ValueMatcher) -> Principal:
    """A claim that may be a string or a list of strings (aud, groups, nested claims): istiod's
    MetadataListValueMatcher with the extended form (list contains one, or the value itself)."""
    listed = value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=value))
    return Principal(
        metadata=metadata_pb2.MetadataMatcher(
            filter=JWT_FILTER,
            path=_path((JWT_PAYLOAD, *claims)),
            value=value_pb2.ValueMatcher(
                or_match=value_pb2.OrMatcher(value_matchers=[listed, value])
            ),
        )
    )


def request_principal(value: str) -> Principal:
    """`<iss>/<sub>` (split at the last `/`, issuers are URLs), with istiod's wildcards."""
    iss, sep, sub = value.rpartition("/")
    found = bool(sep)
    if not found:
        iss, sub = value, ""
    if value == "*":
        match_iss, match_sub = MATCH_ANY, MATCH_ANY
    elif value.startswith("*"):
        if found:
            match_iss = MATCH_ANY if iss == "*" else suffix(iss[1:])
            match_sub = exact(sub)
        else:
            match_iss, match_sub = MATCH_ANY, suffix(value[1:])
    elif value.endswith("*"):
        if found:
            match_iss = exact(iss)
            match_sub = MATCH_ANY if sub == "*" else prefix(sub[:-1])
        else:
            match_iss, match_sub = prefix(value[:-1]), MATCH_ANY
    else:
        match_iss, match_sub = exact(iss), exact(sub)
    return Principal(
        and_ids=Principal.Set(ids=[jwt_claim("iss", match_iss), jwt_claim("sub", match_sub)])
    )


# --- Envoy dynamic metadata (experimental.envoy.filters.*) -----------------------------------


def filter_metadata(filter_name: str, key: str, values: Sequence[str]) -> Permission:
    """`[v]` values match inside a list, others the value itself."""
    matchers = []
    for v in values:
        if v.startswith("[") and v.endswith("]"):
            inner = _value(string(v[1:-1]))
            matchers.append(value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=inner)))
        else:
            matchers.append(_value(string(v)))
    value = (
        matchers[0]
        if len(matchers) == 1
        else value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=matchers))
    )
    return Permission(
        metadata=metadata_pb2.MetadataMatcher(filter=filter_name, path=_path((key,)), value=value)
    )
