"""AuthorizationPolicy -> Envoy RBAC, as istiod's authz builder: one RBAC filter per action in
the order AUDIT, DENY, ALLOW (HTTP filter `envoy.filters.http.rbac` on HTTP chains, network
filter `envoy.filters.network.rbac` ahead of tcp_proxy on TCP chains).

Evaluation is Envoy's, in filter order: a DENY policy that matches answers 403 `RBAC: access
denied` (TCP: closes the connection); then, when any ALLOW policy applies to the workload, a
request that matches none of them is refused the same way. AUDIT (RBAC action LOG) only marks
the request for access logs. `istio.io/dry-run` policies go to `shadow_rules`: evaluated and
counted, never enforced.

Each rule becomes one RBAC policy `ns[<ns>]-policy[<name>]-rule[<i>]`: its `from` entries are
its principals (any of them), its `to` entries its permissions (any of them), and every `when`
condition is added (all of them) to each, as istiod consolidates them. On a TCP chain a rule
that needs HTTP (methods, paths, hosts, requestPrincipals, request.* keys) is dropped from an
ALLOW policy (it allows less), while for DENY and AUDIT only that field is dropped (the rule
matches more): istiod's fail-closed choice.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as tcp_rbac_pb2

from istiolite.model.authorization_policy import (
    KEY_ENVOY_FILTERS,
    KEY_REQUEST_CLAIMS,
    KEY_REQUEST_HEADERS,
    AuthorizationPolicy,
    Condition,
    Operation,
    Rule,
    Source,
    bracketed,
    envoy_filter_key,
)
from istiolite.networking import authz_matchers as m
from istiolite.networking.typed import pack
from istiolite.push.context import PushContext

HTTP_RBAC_FILTER = "envoy.filters.http.rbac"
TCP_RBAC_FILTER = "envoy.filters.network.rbac"
TCP_STAT_PREFIX = "tcp."
_SHADOW_STAT_PREFIX = {"ALLOW": "istio_dry_run_allow_", "DENY": "istio_dry_run_deny_"}
_ENVOY_ACTION = {
    "ALLOW": rbac_pb2.RBAC.ALLOW,
    "DENY": rbac_pb2.RBAC.DENY,
    "AUDIT": rbac_pb2.RBAC.LOG,
}
ORDER = ("AUDIT", "DENY", "ALLOW")

Permission: TypeAlias = rbac_pb2.Permission
Principal: TypeAlias = rbac_pb2.Principal

# A policy without rules: never matches (an ALLOW policy then allows nothing).
MATCH_NEVER = rbac_pb2.Policy(
    permissions=[Permission(not_rule=Permission(any=True))],
    principals=[Principal(not_id=Principal(any=True))],
)


class HttpOnly(Exception):
    """A field a TCP chain cannot evaluate."""


@dataclass(frozen=True, slots=True)
class AuthzFilters:
    http: tuple[hcm.HttpFilter, ...] = ()
    tcp: tuple[lc.Filter, ...] = ()


NO_FILTERS = AuthzFilters()


# --- one field (values and notValues) -> matchers -----------------------------------------------


def _or_permissions(items: Sequence[Permission]) -> Permission:
    return Permission(or_rules=Permission.Set(rules=list(items)))


def _or_principals(items: Sequence[Principal]) -> Principal:
    return Principal(or_ids=Principal.Set(ids=list(items)))


@dataclass(frozen=True, slots=True)
class _Field:
    """One field of a rule: `values` (any) and `not_values` (none of them). `each` makes a
    matcher for one value (the field's values are OR-ed); `whole` one matcher for all values
    at once (istiod's extended generators: JWT claims, metadata)."""

    values: tuple[str, ...]
    not_values: tuple[str, ...]
    permission: bool  # a Permission (what is asked) or a Principal (who asks)
    http_only: bool = False
    each: Callable[[str], object] | None = None
    whole: Callable[[Sequence[str]], object] | None = None

    def matchers(self, for_tcp: bool) -> list[object]:
        if self.http_only and for_tcp and (self.values or self.not_values):
            raise HttpOnly
        out: list[object] = []
        for values, negate in ((self.values, False), (self.not_values, True)):
            if not values:
                continue
            if self.whole is not None:
                built = self.whole(values)
            else:
                assert self.each is not None
                parts = [self.each(v) for v in values]
                built = _or_permissions(parts) if self.permission else _or_principals(parts)
            if negate:
                built = Permission(not_rule=built) if self.permission else Principal(not_id=built)
            out.append(built)
        return out


def _condition_field(policy: AuthorizationPolicy, c: Condition) -> _Field:
    v, nv, key = c.values, c.not_values, c.key
    match key:
        case "destination.ip":
            return _Field(v, nv, True, each=lambda x: Permission(destination_ip=m.cidr(x)))
        case "destination.port":
            return _Field(v, nv, True, each=lambda x: Permission(destination_port=int(x)))
        case "connection.sni":
            return _Field(v, nv, True, each=lambda x: Permission(requested_server_name=m.string(x)))
        case "source.ip":
            return _Field(v, nv, False, each=lambda x: Principal(direct_remote_ip=m.cidr(x)))
        case "remote.ip":
            return _Field(v, nv, False, each=lambda x: Principal(remote_ip=m.cidr(x)))
        case "source.namespace":
            return _Field(v, nv, False, each=m.namespace)
        case "source.serviceAccount":
            return _Field(v, nv, False, each=lambda x: m.service_account(policy.namespace, x))
        case "source.trustDomain":
            return _Field(v, nv, False, each=m.trust_domain)
        case "source.principal":
            return _Field(v, nv, False, each=m.principal)
        case "request.auth.principal":
            return _Field(v, nv, False, http_only=True, whole=_request_principals)
        case "request.auth.audiences":
            return _Field(
                v, nv, False, http_only=True, whole=lambda xs: m.jwt_list_claim(("aud",), _any(xs))
            )
        case "request.auth.presenter":
            return _Field(
                v, nv, False, http_only=True, whole=lambda xs: m.jwt_list_claim(("azp",), _any(xs))
            )
    if key.startswith(KEY_REQUEST_HEADERS):
        name = bracketed(key, KEY_REQUEST_HEADERS)[0]
        return _Field(
            v, nv, False, http_only=True, each=lambda x: Principal(header=m.header(name, x))
        )
    if key.startswith(KEY_REQUEST_CLAIMS):
        claims = bracketed(key, KEY_REQUEST_CLAIMS)
        return _Field(
            v, nv, False, http_only=True, whole=lambda xs: m.jwt_list_claim(claims, _any(xs))
        )
    if key.startswith(KEY_ENVOY_FILTERS):
        filter_name, path = envoy_filter_key(key)
        return _Field(v, nv, True, whole=lambda xs: m.filter_metadata(filter_name, path, xs))
    raise ValueError(f"unknown condition key {key!r}")  # the model rejects these


def _any(values: Sequence[str]) -> object:
    return m.any_of_strings(values)


def _request_principals(values: Sequence[str]) -> Principal:
    found = [m.request_principal(v) for v in values]
    return found[0] if len(found) == 1 else _or_principals(found)


def _direct_remote_ip(value: str) -> Principal:
    return Principal(direct_remote_ip=m.cidr(value))


def _host(value: str) -> Permission:
    return Permission(header=m.host(value))


def _source_fields(policy: AuthorizationPolicy, s: Source) -> list[_Field]:
    """In istiod's order (each of its insertFront calls puts the field first)."""
    return [
        _Field(s.principals, s.not_principals, False, each=m.principal),
        _Field(
            s.request_principals,
            s.not_request_principals,
            False,
            http_only=True,
            whole=_request_principals,
        ),
        _Field(
            s.service_accounts,
            s.not_service_accounts,
            False,
            each=lambda x: m.service_account(policy.namespace, x),
        ),
        _Field(s.trust_domains, s.not_trust_domains, False, each=m.trust_domain),
        _Field(s.namespaces, s.not_namespaces, False, each=m.namespace),
        _Field(
            s.remote_ip_blocks,
            s.not_remote_ip_blocks,
            False,
            each=lambda x: Principal(remote_ip=m.cidr(x)),
        ),
        _Field(
            s.ip_blocks,
            s.not_ip_blocks,
            False,
            each=lambda x: Principal(direct_remote_ip=m.cidr(x)),
        ),
    ]


def _operation_fields(o: Operation) -> list[_Field]:
    return [
        _Field(
            o.hosts, o.not_hosts, True, http_only=True, each=lambda x: Permission(header=m.host(x))
        ),
        _Field(
            o.methods,
            o.not_methods,
            True,
            http_only=True,
            each=lambda x: Permission(header=m.header(":method", x)),
        ),
        _Field(o.paths, o.not_paths, True, http_only=True, each=m.path),
        _Field(o.ports, o.not_ports, True, each=lambda x: Permission(destination_port=int(x))),
    ]


# --- one rule -> one RBAC policy ----------------------------------------------------------------


def _matchers(fields: Sequence[_Field], for_tcp: bool, strict: bool) -> list[object]:
    """All fields' matchers (AND-ed by the caller). `strict` (ALLOW): an HTTP-only field on
    TCP drops the whole rule (HttpOnly propagates); otherwise the field is left out."""
    out: list[object] = []
    for f in fields:
        try:
            out.extend(f.matchers(for_tcp))
        except HttpOnly:
            if strict:
                raise
    return out


def rule_policy(policy: AuthorizationPolicy, rule: Rule, for_tcp: bool) -> rbac_pb2.Policy | None:
    """The RBAC policy of one rule; None when an ALLOW rule cannot apply on a TCP chain."""
    strict = policy.action == "ALLOW"
    when = [_condition_field(policy, c) for c in rule.when]
    when_permissions = [f for f in when if f.permission]
    when_principals = [f for f in when if not f.permission]
    try:
        permissions = []
        for operation in rule.operations or (None,):
            own = _operation_fields(operation) if operation is not None else []
            parts = _matchers([*own, *when_permissions], for_tcp, strict)
            permissions.append(
                Permission(and_rules=Permission.Set(rules=parts or [Permission(any=True)]))
            )
        principals = []
        for source in rule.sources or (None,):
            own = _source_fields(policy, source) if source is not None else []
            parts = _matchers([*own, *when_principals], for_tcp, strict)
            principals.append(Principal(and_ids=Principal.Set(ids=parts or [Principal(any=True)])))
    except HttpOnly:
        return None
    return rbac_pb2.Policy(permissions=permissions, principals=principals)


def policy_name(policy: AuthorizationPolicy, index: int) -> str:
    return f"ns[{policy.namespace}]-policy[{policy.meta.name}]-rule[{index}]"


def _rbac(policies: Sequence[AuthorizationPolicy], action: str, for_tcp: bool) -> rbac_pb2.RBAC:
    rbac = rbac_pb2.RBAC(action=_ENVOY_ACTION[action])
    for policy in policies:
        if not policy.rules:
            rbac.policies[policy_name(policy, 0)].CopyFrom(MATCH_NEVER)
        for i, rule in enumerate(policy.rules):
            built = rule_policy(policy, rule, for_tcp)
            if built is not None:
                rbac.policies[policy_name(policy, i)].CopyFrom(built)
    return rbac


@dataclass(frozen=True, slots=True)
class _Built:
    action: str
    rules: rbac_pb2.RBAC | None
    shadow: rbac_pb2.RBAC | None


def _build(policies: Sequence[AuthorizationPolicy], for_tcp: bool) -> list[_Built]:
    out = []
    for action in ORDER:
        mine = [p for p in policies if p.action == action]
        if not mine:
            continue
        enforced = [p for p in mine if not p.dry_run]
        dry = [p for p in mine if p.dry_run]
        out.append(
            _Built(
                action,
                _rbac(enforced, action, for_tcp) if enforced else None,
                _rbac(dry, action, for_tcp) if dry else None,
            )
        )
    return out


def http_rbac_filters(policies: Sequence[AuthorizationPolicy]) -> tuple[hcm.HttpFilter, ...]:
    out = []
    for built in _build(policies, for_tcp=False):
        config = http_rbac_pb2.RBAC()
        if built.rules is not None:
            config.rules.CopyFrom(built.rules)
        if built.shadow is not None:
            config.shadow_rules.CopyFrom(built.shadow)
            config.shadow_rules_stat_prefix = _SHADOW_STAT_PREFIX.get(built.action, "")
        out.append(hcm.HttpFilter(name=HTTP_RBAC_FILTER, typed_config=pack(config)))
    return tuple(out)


def tcp_rbac_filters(policies: Sequence[AuthorizationPolicy]) -> tuple[lc.Filter, ...]:
    out = []
    for built in _build(policies, for_tcp=True):
        config = tcp_rbac_pb2.RBAC(stat_prefix=TCP_STAT_PREFIX)
        if built.rules is not None:
            config.rules.CopyFrom(built.rules)
        if built.shadow is not None:
            config.shadow_rules.CopyFrom(built.shadow)
            config.shadow_rules_stat_prefix = _SHADOW_STAT_PREFIX.get(built.action, "")
        out.append(lc.Filter(name=TCP_RBAC_FILTER, typed_config=pack(config)))
    return tuple(out)


# --- what applies to a proxy --------------------------------------------------------------------


def authz_filters(ctx: PushContext, namespace: str, labels: Mapping[str, str]) -> AuthzFilters:
    """The RBAC filters for a workload's inbound chains (sidecar) or listeners (gateway)."""
    policies = ctx.authorization_policies(namespace, labels)
    if not policies:
        return NO_FILTERS
    return AuthzFilters(http_rbac_filters(policies), tcp_rbac_filters(policies))


def authz_key(ctx: PushContext, namespace: str, labels: Mapping[str, str]) -> Hashable:
    """Which policies apply (their content is a recorded dependency of the built listeners)."""
    return tuple(p.key for p in ctx.authorization_policies(namespace, labels))


def gateway_rbac_filters(
    ctx: PushContext, namespace: str, labels: Mapping[str, str]
) -> tuple[hcm.HttpFilter, ...]:
    """The RBAC filters a gateway proxy's HTTP connection managers carry."""
    return authz_filters(ctx, namespace, labels).http
