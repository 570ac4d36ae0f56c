"""security.istio.io AuthorizationPolicy (v1 and v1beta1): who may call a workload, validated
field by field as istiod's `ValidateAuthorizationPolicy` does.

Translated by networking/authz.py into Envoy RBAC. Actions ALLOW, DENY and AUDIT; CUSTOM (an
external authorizer) is refused with a clear error, as istiolite has no extension providers.
A policy picks workloads by `selector.matchLabels` (in its namespace; the root namespace
`istio-system` is mesh-wide) or by `targetRefs` (a Gateway API `Gateway` in its namespace;
Service / ServiceEntry / GatewayClass targets are for waypoint proxies, which istiolite has
none of: warned, they select nothing).

The regexes the translation sends to Envoy are built here (`*_regex`) so that validation can
check them with RE2 exactly as they will be sent: Envoy NACKs a regex past its program size.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.regex import regex_error
from istiolite.model.sidecar import ROOT_NAMESPACE
from istiolite.model.validation import (
    ValidationError,
    check_header_text,
    clip,
    require_list,
    require_mapping,
    require_str,
    require_string_map,
)

ACTIONS = ("ALLOW", "DENY", "AUDIT")
DRY_RUN_ANNOTATION = "istio.io/dry-run"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
# istiod's allowedTargetRefs: (group, kind); "" is the core group.
_TARGET_KINDS = {
    (GATEWAY_API_GROUP, "Gateway"),
    (GATEWAY_API_GROUP, "GatewayClass"),
    ("", "Service"),
    ("networking.istio.io", "ServiceEntry"),
}
# Bounds on what one policy may hold (istiod caps serviceAccounts at 16; the rest keeps a typo
# or a generated list from turning into a listener Envoy takes seconds to load).
MAX_VALUES = 256
MAX_RULES = 256
MAX_VALUE_LENGTH = 1024

# `when` keys (istiod's pkg/config/security attributes). Exact keys, then `prefix[name]` keys.
KEY_REQUEST_HEADERS = "request.headers"
KEY_REQUEST_CLAIMS = "request.auth.claims"
KEY_ENVOY_FILTERS = "experimental.envoy.filters."
EXACT_KEYS = frozenset(
    {
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.serviceAccount",
        "source.trustDomain",
        "source.principal",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)
_RETIRED_KEYS = {
    "destination.namespace": "is replaced by the policy's metadata.namespace",
    "destination.name": "is a v1alpha1 attribute, not supported",
    "destination.user": "is a v1alpha1 attribute, not supported",
}
# What Envoy cannot see on a TCP connection: request attributes (istiod's "HTTP only").
HTTP_ONLY_KEYS = frozenset(
    {"request.auth.principal", "request.auth.audiences", "request.auth.presenter"}
)
HTTP_ONLY_PREFIXES = (KEY_REQUEST_HEADERS, KEY_REQUEST_CLAIMS)


def is_http_only_key(key: str) -> bool:
    return key in HTTP_ONLY_KEYS or key.startswith(HTTP_ONLY_PREFIXES)


@dataclass(frozen=True, slots=True)
class Source:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()
    trust_domains: tuple[str, ...] = ()
    not_trust_domains: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    sources: tuple[Source, ...] = ()  # `from`: any of them (none: every source)
    operations: tuple[Operation, ...] = ()  # `to`: any of them (none: every operation)
    when: tuple[Condition, ...] = ()  # all of them


@dataclass(frozen=True, slots=True)
class TargetRef:
    group: str
    kind: str
    name: str

    @property
    def is_gateway(self) -> bool:
        return (self.group, self.kind) == (GATEWAY_API_GROUP, "Gateway")


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    meta: ObjectMeta
    action: str = "ALLOW"
    selector: dict[str, str] | None = None  # None: every workload in scope
    target_refs: tuple[TargetRef, ...] = ()
    rules: tuple[Rule, ...] = ()
    dry_run: bool = False  # istio.io/dry-run: evaluated and logged, never enforced
    # (field, message) found while parsing: valid, but not what the author may think.
    notes: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.meta.name}"

    def applies_to(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """As istiod's WorkloadPolicyMatcher: policies of the root namespace and of the
        workload's own; a Gateway API gateway's pods (labelled with their Gateway's name) take
        the policies whose targetRefs name that Gateway, and selector policies as well; other
        workloads never take a targetRefs policy."""
        if self.namespace not in (ROOT_NAMESPACE, namespace):
            return False
        if self.target_refs:
            gateway = labels.get(GATEWAY_NAME_LABEL)
            return (
                gateway is not None
                and self.namespace == namespace
                and any(ref.is_gateway and ref.name == gateway for ref in self.target_refs)
            )
        return self.selector is None or all(labels.get(k) == v for k, v in self.selector.items())

    def warnings(self) -> list[tuple[str, str]]:
        return list(self.notes)


# --- the regexes sent to Envoy (RE2 syntax) ---------------------------------------------------

_META = frozenset("\\.+*?()|[]{}^$")


def quote_meta(text: str) -> str:
    """Go's regexp.QuoteMeta (istiod's escaping), valid RE2."""
    return "".join("\\" + c if c in _META else c for c in text)


def namespace_regex(value: str) -> str:
    """`source.namespace` / `namespaces`: the peer principal names the namespace; `*` in the
    value matches any text."""
    return ".*/ns/{}/.*".format(".*".join(quote_meta(part) for part in value.split("*")))


def service_account_regex(default_namespace: str, value: str) -> str:
    """`serviceAccounts`: `<sa>` (in the policy's namespace) or `<ns>/<sa>`."""
    ns, sep, sa = value.partition("/")
    if not sep:
        ns, sa = default_namespace, value
    return f"spiffe://.+/ns/{quote_meta(ns)}/(.+/|)sa/{quote_meta(sa)}(/.+)?"


def trust_domain_regex(value: str) -> str:
    """A trust domain with one `*` inside a label (`*.example.com`, `cluster.*`)."""
    before, _, after = value.partition("*")
    return f"spiffe://{quote_meta(before)}[^/]*{quote_meta(after)}/.*"


def principal_suffix_regex(value: str) -> str:
    """`*<suffix>` principals: spiffe:// then anything then the suffix."""
    return "spiffe://.*" + quote_meta(value[1:])


_PORT_SUFFIX = "(:[0-9]{1,5})?"


def host_regex(value: str) -> str:
    """An exact (`example.com`) or suffix (`*.example.com`) host without a port: matched with or
    without the port a client may add to the authority, case-insensitively."""
    if value.startswith("*"):
        return f"(?i).*{quote_meta(value[1:])}{_PORT_SUFFIX}"
    return f"(?i){quote_meta(value)}{_PORT_SUFFIX}"


def host_has_port(value: str) -> bool:
    """`example.com:8080` / `[::1]:80`: the author wrote the port, matched as written."""
    tail = value.rpartition("]")[2] if value.startswith("[") else value
    head, sep, port = tail.rpartition(":")
    return bool(sep) and port.isdigit() and bool(head or value.startswith("["))


# --- parsing ------------------------------------------------------------------------------------


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    items = require_list(raw, where)
    if len(items) > MAX_VALUES:
        raise ValidationError(where, f"has {len(items)} values, more than {MAX_VALUES}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValidationError(f"{where}[{i}]", f"must be a string, got {item!r}")
        if not item:
            raise ValidationError(f"{where}[{i}]", "empty value not allowed")
        if len(item) > MAX_VALUE_LENGTH:
            raise ValidationError(
                f"{where}[{i}]", f"is {len(item)} characters, over {MAX_VALUE_LENGTH}"
            )
        out.append(item)
    return tuple(out)


def _check_wildcards(values: tuple[str, ...], where: str) -> None:
    """istiod matches `*` only as the whole value, a prefix or a suffix; anywhere else it is
    a literal `*` that no real value has."""
    for i, value in enumerate(values):
        count = value.count("*")
        if count > 1 or (count == 1 and not (value.startswith("*") or value.endswith("*"))):
            raise ValidationError(
                f"{where}[{i}]",
                f"{clip(value)!r}: a wildcard '*' may only be the whole value, its start or "
                "its end",
            )


def _check_regex(pattern: str, where: str) -> None:
    problem = regex_error(pattern)
    if problem is not None:
        raise ValidationError(where, f"would need the regex {clip(pattern)!r}, which {problem}")


def _check_ips(values: tuple[str, ...], where: str) -> None:
    for i, value in enumerate(values):
        try:
            if "/" in value:
                ipaddress.ip_network(value, strict=False)
            else:
                ipaddress.ip_address(value)
        except ValueError:
            what = "CIDR range" if "/" in value else "IP address"
            raise ValidationError(f"{where}[{i}]", f"bad {what} {clip(value)!r}") from None


def _check_ports(values: tuple[str, ...], where: str) -> None:
    for i, value in enumerate(values):
        if not value.isascii() or not value.isdigit() or int(value) > 65535:
            raise ValidationError(
                f"{where}[{i}]", f"bad port {clip(value)!r}: must be a number from 0 to 65535"
            )


def _check_principals(values: tuple[str, ...], where: str) -> None:
    """Istio principals are SPIFFE IDs without the scheme: `<trust-domain>/ns/<ns>/sa/<sa>`."""
    _check_wildcards(values, where)
    for i, value in enumerate(values):
        if value.lower().startswith("spiffe://"):
            raise ValidationError(
                f"{where}[{i}]",
                f"{clip(value)!r}: write principals without 'spiffe://' "
                f"(e.g. {clip(value[9:])!r}); istiolite adds it",
            )
        if value.startswith("*") and value != "*":
            _check_regex(principal_suffix_regex(value), f"{where}[{i}]")


def _check_service_accounts(values: tuple[str, ...], where: str) -> None:
    if len(values) > 16:
        raise ValidationError(where, "may not have more than 16 values")
    for i, value in enumerate(values):
        ns, sep, sa = value.partition("/")
        if "*" in value:
            raise ValidationError(f"{where}[{i}]", "wildcard not allowed")
        if "/" in sa or (sep and (not ns or not sa)):
            raise ValidationError(
                f"{where}[{i}]",
                f"expected 'serviceAccount' or 'namespace/serviceAccount', found {clip(value)!r}",
            )


def _check_trust_domains(values: tuple[str, ...], where: str) -> None:
    _check_wildcards(values, where)
    for i, value in enumerate(values):
        if "/" in value:
            raise ValidationError(f"{where}[{i}]", f"trust domain must not contain '/': {value!r}")
        if "*" in value and value != "*":
            _check_regex(trust_domain_regex(value), f"{where}[{i}]")


def _check_namespaces(values: tuple[str, ...], where: str) -> None:
    for i, value in enumerate(values):
        _check_regex(namespace_regex(value), f"{where}[{i}]")


def _check_hosts(values: tuple[str, ...], where: str) -> None:
    _check_wildcards(values, where)
    for i, value in enumerate(values):
        check_header_text(value, f"{where}[{i}]", "host")
        if value != "*" and not value.endswith("*") and not host_has_port(value):
            _check_regex(host_regex(value), f"{where}[{i}]")


def _check_paths(values: tuple[str, ...], where: str) -> None:
    """Istio paths: exact, `/prefix/*`, `*suffix`, `*`; or a template with `{*}` (one
    segment) and `{**}` (the rest, last), whose other segments are plain URI characters."""
    for i, value in enumerate(values):
        at = f"{where}[{i}]"
        if "{" in value or "}" in value:
            _check_path_template(value, at)
        else:
            _check_wildcards((value,), at.rpartition("[")[0])


_PCHAR = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()+,;:@="
)


def _check_path_template(value: str, where: str) -> None:
    seen_any = False
    for glob in value.strip("/").split("/"):
        if glob in ("{*}", "{**}"):
            if seen_any:
                raise ValidationError(where, f"{clip(value)!r}: {{**}} must be the last operator")
            seen_any = glob == "{**}"
            continue
        if "{" in glob or "}" in glob:
            raise ValidationError(
                where, f"{clip(value)!r}: '{{' or '}}' only as a whole {{*}} or {{**}} segment"
            )
        if glob and not set(glob) <= _PCHAR:
            raise ValidationError(where, f"{clip(value)!r}: segment {clip(glob)!r} is not a URI")


def is_path_template(value: str) -> bool:
    return "{*}" in value or "{**}" in value


def bracketed(key: str, prefix: str) -> tuple[str, ...]:
    """The names in `prefix[a]`, or for claims `prefix[a][b]` (nested claims); () if malformed.
    As istiod: claims that do not split cleanly are the whole text between the brackets."""
    rest = key[len(prefix) :]
    if len(rest) < 3 or rest[0] != "[" or rest[-1] != "]":
        return ()
    if prefix == KEY_REQUEST_CLAIMS:
        names = rest[1:-1].split("][")
        if all(n and "[" not in n and "]" not in n for n in names):
            return tuple(names)
    return (rest[1:-1],)


def envoy_filter_key(key: str) -> tuple[str, str]:
    """`experimental.envoy.filters.a.b[c]` -> ("envoy.filters.a.b", "c")."""
    body = key.removeprefix("experimental.").removesuffix("]")
    name, _, path = body.partition("[")
    return name, path


def _check_condition(key: str, values: tuple[str, ...], where: str) -> None:
    if key in ("source.ip", "remote.ip", "destination.ip"):
        _check_ips(values, where)
    elif key == "destination.port":
        _check_ports(values, where)
    elif key == "source.principal":
        _check_principals(values, where)
    elif key == "source.namespace":
        _check_namespaces(values, where)
    elif key == "source.serviceAccount":
        _check_service_accounts(values, where)
    elif key == "source.trustDomain":
        _check_trust_domains(values, where)
    elif key.startswith(KEY_REQUEST_HEADERS):
        for i, value in enumerate(values):
            check_header_text(value, f"{where}[{i}]")


def _parse_key(raw: Any, where: str) -> str:
    key = require_str(raw, where, required=True)
    if key in EXACT_KEYS:
        return key
    if key in _RETIRED_KEYS or key.startswith("destination.labels"):
        reason = _RETIRED_KEYS.get(key, "is replaced by the workload selector")
        raise ValidationError(where, f"attribute {key!r} {reason}")
    for prefix in (KEY_REQUEST_HEADERS, KEY_REQUEST_CLAIMS, KEY_ENVOY_FILTERS):
        if key.startswith(prefix):
            if prefix == KEY_ENVOY_FILTERS:
                name, path = envoy_filter_key(key)
                ok = key.endswith("]") and bool(path) and name != "envoy.filters."
            else:
                ok = bool(bracketed(key, prefix))
            if not ok:
                raise ValidationError(where, f"bad key {clip(key)!r}: should have format a[b]")
            if prefix == KEY_REQUEST_HEADERS:
                check_header_text(bracketed(key, prefix)[0], where, "header name")
            return key
    raise ValidationError(
        where,
        f"unknown attribute {clip(key)!r} (known: {', '.join(sorted(EXACT_KEYS))}, "
        "request.headers[...], request.auth.claims[...], experimental.envoy.filters.*[...])",
    )


_SOURCE_FIELDS = {
    "principals": _check_principals,
    "notPrincipals": _check_principals,
    "requestPrincipals": _check_wildcards,
    "notRequestPrincipals": _check_wildcards,
    "namespaces": _check_namespaces,
    "notNamespaces": _check_namespaces,
    "serviceAccounts": _check_service_accounts,
    "notServiceAccounts": _check_service_accounts,
    "trustDomains": _check_trust_domains,
    "notTrustDomains": _check_trust_domains,
    "ipBlocks": _check_ips,
    "notIpBlocks": _check_ips,
    "remoteIpBlocks": _check_ips,
    "notRemoteIpBlocks": _check_ips,
}
_OPERATION_FIELDS = {
    "hosts": _check_hosts,
    "notHosts": _check_hosts,
    "ports": _check_ports,
    "notPorts": _check_ports,
    "methods": _check_wildcards,
    "notMethods": _check_wildcards,
    "paths": _check_paths,
    "notPaths": _check_paths,
}
HTTP_ONLY_SOURCE_FIELDS = ("requestPrincipals", "notRequestPrincipals")
HTTP_ONLY_OPERATION_FIELDS = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _parse_values(
    raw: dict[str, Any], checks: Mapping[str, Any], where: str
) -> dict[str, tuple[str, ...]]:
    out = {}
    for name, check in checks.items():
        values = _strings(raw.get(name), f"{where}.{name}")
        check(values, f"{where}.{name}")
        out[_snake(name)] = values
    return out


def _parse_source(raw: Any, where: str) -> Source:
    body = require_mapping(raw, where)
    if not body:
        raise ValidationError(where, "must not be empty")
    values = _parse_values(body, _SOURCE_FIELDS, where)
    if not any(values.values()):
        raise ValidationError(where, "must not be empty")
    if (values["service_accounts"] or values["not_service_accounts"]) and (
        values["principals"]
        or values["not_principals"]
        or values["namespaces"]
        or values["not_namespaces"]
    ):
        raise ValidationError(where, "cannot set serviceAccounts with namespaces or principals")
    return Source(**values)


def _parse_operation(raw: Any, where: str) -> Operation:
    body = require_mapping(raw, where)
    values = _parse_values(body, _OPERATION_FIELDS, where)
    if not any(values.values()):
        raise ValidationError(where, "must not be empty")
    return Operation(**values)


def _parse_rule(raw: Any, where: str) -> Rule:
    body = require_mapping(raw, where)
    sources = []
    if "from" in body and body["from"] is not None:
        items = require_list(body["from"], f"{where}.from")
        if not items:
            raise ValidationError(f"{where}.from", "must not be empty (leave it out to match all)")
        for j, item in enumerate(items):
            entry = require_mapping(item, f"{where}.from[{j}]")
            if entry.get("source") is None:
                raise ValidationError(f"{where}.from[{j}].source", "is required")
            sources.append(_parse_source(entry["source"], f"{where}.from[{j}].source"))
    operations = []
    if "to" in body and body["to"] is not None:
        items = require_list(body["to"], f"{where}.to")
        if not items:
            raise ValidationError(f"{where}.to", "must not be empty (leave it out to match all)")
        for j, item in enumerate(items):
            entry = require_mapping(item, f"{where}.to[{j}]")
            if entry.get("operation") is None:
                raise ValidationError(f"{where}.to[{j}].operation", "is required")
            operations.append(_parse_operation(entry["operation"], f"{where}.to[{j}].operation"))
    conditions = []
    for j, item in enumerate(require_list(body.get("when"), f"{where}.when")):
        at = f"{where}.when[{j}]"
        entry = require_mapping(item, at)
        key = _parse_key(entry.get("key"), f"{at}.key")
        values = _strings(entry.get("values"), f"{at}.values")
        not_values = _strings(entry.get("notValues"), f"{at}.notValues")
        if not values and not not_values:
            raise ValidationError(at, f"at least one of values or notValues must be set for {key}")
        _check_condition(key, values, f"{at}.values")
        _check_condition(key, not_values, f"{at}.notValues")
        conditions.append(Condition(key, values, not_values))
    return Rule(tuple(sources), tuple(operations), tuple(conditions))


def _parse_target_refs(spec: dict[str, Any]) -> tuple[TargetRef, ...]:
    raw_refs = require_list(spec.get("targetRefs"), "spec.targetRefs")
    where_of = [f"spec.targetRefs[{i}]" for i in range(len(raw_refs))]
    if spec.get("targetRef") is not None:
        if raw_refs:
            raise ValidationError("spec.targetRef", "set targetRefs or targetRef, not both")
        raw_refs, where_of = [spec["targetRef"]], ["spec.targetRef"]
    refs = []
    for raw, where in zip(raw_refs, where_of, strict=True):
        body = require_mapping(raw, where)
        name = require_str(body.get("name"), f"{where}.name", required=True)
        if require_str(body.get("namespace"), f"{where}.namespace"):
            raise ValidationError(
                f"{where}.namespace",
                "must not be set; cross-namespace references are not supported",
            )
        group = require_str(body.get("group"), f"{where}.group")
        group = "" if group == "core" else group
        kind = require_str(body.get("kind"), f"{where}.kind", required=True)
        if (group, kind) not in _TARGET_KINDS:
            allowed = ", ".join(f"{g or 'core'}/{k}" for g, k in sorted(_TARGET_KINDS))
            raise ValidationError(f"{where}.kind", f"{group}/{kind}: must be one of {allowed}")
        refs.append(TargetRef(group, kind, name))
    return tuple(refs)


def _dry_run(meta: ObjectMeta) -> bool:
    text = meta.annotations.get(DRY_RUN_ANNOTATION)
    if text is None:
        return False
    # Go's strconv.ParseBool, as istiod reads it.
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValidationError(
        f"metadata.annotations.{DRY_RUN_ANNOTATION}", f"must be true or false, got {clip(text)!r}"
    )


def _http_only_fields(rule: Rule) -> list[str]:
    found: dict[str, None] = {}
    for source in rule.sources:
        for name in HTTP_ONLY_SOURCE_FIELDS:
            if getattr(source, _snake(name)):
                found[name] = None
    for operation in rule.operations:
        for name in HTTP_ONLY_OPERATION_FIELDS:
            if getattr(operation, _snake(name)):
                found[name] = None
    for condition in rule.when:
        if is_http_only_key(condition.key):
            found[condition.key] = None
    return list(found)


def _notes(policy: AuthorizationPolicy) -> list[tuple[str, str]]:
    """Valid settings that do less than they seem to (istiod's validation warnings, and the
    HTTP-only fields that TCP ports cannot apply)."""
    out = []
    if policy.selector is not None and not policy.selector:
        out.append(("spec.selector", "workload selector specified without labels"))
    for i, ref in enumerate(policy.target_refs):
        if not ref.is_gateway:
            out.append(
                (
                    f"spec.targetRefs[{i}]",
                    f"a {ref.kind} target applies to waypoint proxies only, which istiolite "
                    "does not run: this reference selects nothing",
                )
            )
    if policy.action == "DENY" and not policy.rules:
        out.append(
            (
                "spec.rules",
                "a DENY policy without rules never triggers (istiod's validation rejects it); "
                "write `rules: [{}]` to deny every request",
            )
        )
    tcp_effect = {
        "ALLOW": "on a TCP port the rule is dropped, so it allows nothing there",
        "DENY": "on a TCP port those fields are ignored, so the rule denies every connection "
        "its other fields match",
        "AUDIT": "on a TCP port those fields are ignored, so the rule audits more there",
    }[policy.action]
    for i, rule in enumerate(policy.rules):
        # As istiod's validation: a rule kept to ports by `to.operation.ports` is the author's
        # choice; without, it reaches the workload's TCP ports too.
        if any(o.ports or o.not_ports for o in rule.operations):
            continue
        fields = _http_only_fields(rule)
        if fields:
            out.append(
                (
                    f"spec.rules[{i}]",
                    f"uses HTTP-only {', '.join(fields)}: {tcp_effect} "
                    "(set to.operation.ports to keep the rule to HTTP ports)",
                )
            )
    return out


def parse_authorization_policy(raw: dict[str, Any]) -> AuthorizationPolicy:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    action = require_str(spec.get("action"), "spec.action") or "ALLOW"
    if action == "CUSTOM":
        raise ValidationError(
            "spec.action",
            "CUSTOM (an external authorizer) is not supported by istiolite; "
            "use ALLOW, DENY or AUDIT",
        )
    if action not in ACTIONS:
        raise ValidationError("spec.action", f"{clip(action)!r}: must be ALLOW, DENY or AUDIT")
    if spec.get("provider") is not None:
        raise ValidationError("spec.provider", f"must not be set with action {action}")
    selector: dict[str, str] | None = None
    if spec.get("selector") is not None:
        body = require_mapping(spec["selector"], "spec.selector")
        selector = require_string_map(body.get("matchLabels"), "spec.selector.matchLabels")
        for k, v in selector.items():
            if not k or "*" in k or "*" in v:
                raise ValidationError(
                    f"spec.selector.matchLabels.{k}",
                    f"{k}={v}: empty keys and wildcards are not supported in a selector",
                )
    target_refs = _parse_target_refs(spec)
    if selector is not None and target_refs:
        raise ValidationError("spec.targetRefs", "only one of targetRefs or selector can be set")
    raw_rules = require_list(spec.get("rules"), "spec.rules")
    if len(raw_rules) > MAX_RULES:
        raise ValidationError("spec.rules", f"has {len(raw_rules)} rules, more than {MAX_RULES}")
    rules = tuple(_parse_rule(r, f"spec.rules[{i}]") for i, r in enumerate(raw_rules))
    policy = AuthorizationPolicy(
        meta=meta,
        action=action,
        selector=selector,
        target_refs=target_refs,
        rules=rules,
        dry_run=_dry_run(meta),
    )
    return replace(policy, notes=tuple(_notes(policy)))
