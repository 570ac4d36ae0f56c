"""gateway.networking.k8s.io routes: HTTPRoute (v1, v1beta1), GRPCRoute (v1, v1alpha2), TLSRoute
and TCPRoute (v1alpha2, v1alpha3), validated field by field as the CRDs' rules and istiod's
webhook do. Conversion into VirtualService routes is `convert.py`'s job."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from istiolite.model.gatewayapi.common import (
    MAX_FILTERS,
    MAX_MATCHES,
    MAX_RULES,
    ApiMeta,
    BackendRef,
    ParentRef,
    backend_ref,
    backend_refs,
    hostname,
    hostnames,
    limited,
    parent_refs,
    parse_api_meta,
)
from istiolite.model.meta import ObjectMeta
from istiolite.model.regex import regex_error
from istiolite.model.validation import (
    ValidationError,
    check_header_operation_name,
    check_header_text,
    clip,
    require_list,
    require_mapping,
    require_port,
    require_str,
)
from istiolite.model.virtualservice import CorsPolicy, HeaderOperations, StringMatch

# GEP-2257 durations: up to four number+unit parts, e.g. "1h30m", "500ms".
_DURATION = re.compile(r"^([0-9]{1,5}(h|ms|m|s)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
_VALUE_TYPES = ("Exact", "RegularExpression")
_REDIRECT_CODES = (301, 302, 303, 307, 308)
# Filters translated for each route kind; others are refused naming the filter.
HTTP_FILTERS = (
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
    "RequestMirror",
    "CORS",
)
_FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "RequestMirror": "requestMirror",
    "CORS": "cors",
}
GRPC_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror")


def parse_gep_duration(raw: Any, where: str) -> float:
    text = require_str(raw, where, required=True)
    if not _DURATION.match(text):
        raise ValidationError(where, f"{clip(text)!r} is not a duration like '10s' or '1h30m'")
    return sum(int(n) * _UNIT[u] for n, u in _DURATION_PART.findall(text))


@dataclass(frozen=True, slots=True)
class ValueMatch:
    type: str  # Exact | RegularExpression (paths: also PathPrefix)
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """One HTTPRoute match (all conditions must hold); GRPCRoute's `method` becomes a path."""

    path: ValueMatch | None = None
    headers: tuple[ValueMatch, ...] = ()
    query_params: tuple[ValueMatch, ...] = ()
    method: str = ""

    def precedence(self) -> tuple[int, int, int, int, int]:
        """The spec's order among matches (larger first): an exact path, then the longest
        path, a method, the most headers, the most query parameters."""
        path = self.path or ValueMatch("PathPrefix", "", "/")
        return (
            int(path.type == "Exact"),
            len(path.value) if path.type != "RegularExpression" else 0,
            int(bool(self.method)),
            len(self.headers),
            len(self.query_params),
        )


@dataclass(frozen=True, slots=True)
class PathModifier:
    type: str  # ReplaceFullPath | ReplacePrefixMatch
    value: str


@dataclass(frozen=True, slots=True)
class RedirectFilter:
    scheme: str = ""
    hostname: str = ""
    path: PathModifier | None = None
    port: int | None = None
    status_code: int = 302


@dataclass(frozen=True, slots=True)
class RewriteFilter:
    hostname: str = ""
    path: PathModifier | None = None


@dataclass(frozen=True, slots=True)
class MirrorFilter:
    backend: BackendRef
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Filters:
    request_headers: HeaderOperations | None = None
    response_headers: HeaderOperations | None = None
    redirect: RedirectFilter | None = None
    rewrite: RewriteFilter | None = None
    mirrors: tuple[MirrorFilter, ...] = ()
    cors: CorsPolicy | None = None


@dataclass(frozen=True, slots=True)
class WeightedBackend:
    ref: BackendRef
    filters: Filters = Filters()


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int | None = None
    codes: tuple[int, ...] = ()
    backoff: float | None = None


@dataclass(frozen=True, slots=True)
class RouteRule:
    """A rule of an HTTPRoute or GRPCRoute."""

    index: int
    name: str = ""
    matches: tuple[RouteMatch, ...] = ()
    filters: Filters = Filters()
    backends: tuple[WeightedBackend, ...] = ()
    request_timeout: float | None = None
    backend_timeout: float | None = None
    retry: Retry | None = None


@dataclass(frozen=True, slots=True)
class L4Rule:
    """A rule of a TLSRoute or TCPRoute: where the bytes go."""

    index: int
    backends: tuple[BackendRef, ...]


@dataclass(frozen=True, slots=True)
class Route:
    """Any of the four route kinds; `kind` says which."""

    kind: str  # HTTPRoute | GRPCRoute | TLSRoute | TCPRoute
    meta: ObjectMeta
    api: ApiMeta
    parents: tuple[ParentRef, ...]
    hostnames: tuple[str, ...] = ()
    rules: tuple[RouteRule, ...] = ()
    l4_rules: tuple[L4Rule, ...] = field(default=())

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def is_http(self) -> bool:
        return self.kind in ("HTTPRoute", "GRPCRoute")


def _value_match(raw: Any, where: str, types: tuple[str, ...], *, named: bool) -> ValueMatch:
    m = require_mapping(raw, where)
    kind = require_str(m.get("type"), f"{where}.type") or types[0]
    if kind not in types:
        raise ValidationError(f"{where}.type", f"{clip(kind)!r} is not one of {', '.join(types)}")
    name = ""
    if named:
        name = require_str(m.get("name"), f"{where}.name", required=True)
        check_header_text(name, f"{where}.name", "name")
    value = require_str(m.get("value"), f"{where}.value", required=not named)
    check_header_text(value, f"{where}.value")
    if kind == "RegularExpression":
        reason = regex_error(value)
        if reason is not None:
            raise ValidationError(f"{where}.value", f"invalid regular expression: {reason}")
    return ValueMatch(kind, name.lower() if named else "", value)


def _path_match(raw: Any, where: str) -> ValueMatch:
    m = require_mapping(raw, where)
    path = _value_match(
        {"type": m.get("type") or "PathPrefix", "value": m.get("value") or "/"},
        where,
        _PATH_TYPES,
        named=False,
    )
    if path.type != "RegularExpression" and not path.value.startswith("/"):
        raise ValidationError(f"{where}.value", f"{clip(path.value)!r} must begin with '/'")
    return path


def _named(raw: Any, where: str) -> tuple[ValueMatch, ...]:
    items = tuple(
        _value_match(h, f"{where}[{i}]", _VALUE_TYPES, named=True)
        for i, h in enumerate(limited(raw, where, 16))
    )
    names = [m.name for m in items]
    if len(set(names)) != len(names):
        raise ValidationError(where, "the same name is matched twice")
    return items


def _http_match(raw: Any, where: str) -> RouteMatch:
    m = require_mapping(raw, where)
    method = require_str(m.get("method"), f"{where}.method")
    if method and method not in _HTTP_METHODS:
        raise ValidationError(f"{where}.method", f"{clip(method)!r} is not an HTTP method")
    path = _path_match(m.get("path"), f"{where}.path") if m.get("path") is not None else None
    return RouteMatch(
        path=path,
        headers=_named(m.get("headers"), f"{where}.headers"),
        query_params=_named(m.get("queryParams"), f"{where}.queryParams"),
        method=method,
    )


_GRPC_NAME = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*$")


def _grpc_match(raw: Any, where: str) -> RouteMatch:
    """A gRPC service/method match as the request path it stands for (`/<service>/<method>`)."""
    m = require_mapping(raw, where)
    headers = _named(m.get("headers"), f"{where}.headers")
    if m.get("method") is None:
        return RouteMatch(headers=headers)
    at = f"{where}.method"
    mm = require_mapping(m["method"], at)
    kind = require_str(mm.get("type"), f"{at}.type") or "Exact"
    if kind not in _VALUE_TYPES:
        raise ValidationError(f"{at}.type", f"{clip(kind)!r} is not Exact or RegularExpression")
    service = require_str(mm.get("service"), f"{at}.service")
    method = require_str(mm.get("method"), f"{at}.method")
    if not service and not method:
        raise ValidationError(at, "needs a service or a method")
    if kind == "Exact":
        for key, value in (("service", service), ("method", method)):
            if value and not _GRPC_NAME.match(value):
                raise ValidationError(f"{at}.{key}", f"{clip(value)!r} is not a gRPC name")
        if service and method:
            path = ValueMatch("Exact", "", f"/{service}/{method}")
        elif service:
            path = ValueMatch("PathPrefix", "", f"/{service}/")
        else:
            path = ValueMatch("RegularExpression", "", f"/[^/]+/{re.escape(method)}")
    else:
        for key, value in (("service", service), ("method", method)):
            reason = regex_error(value) if value else None
            if reason is not None:
                raise ValidationError(f"{at}.{key}", f"invalid regular expression: {reason}")
        path = ValueMatch("RegularExpression", "", f"/{service or '[^/]+'}/{method or '[^/]+'}")
    return RouteMatch(path=path, headers=headers)


def _header_modifier(raw: Any, where: str) -> HeaderOperations:
    m = require_mapping(raw, where)
    ops: dict[str, dict[str, str]] = {}
    for key in ("set", "add"):
        ops[key] = {}
        for i, item in enumerate(limited(m.get(key), f"{where}.{key}", 16)):
            h = require_mapping(item, f"{where}.{key}[{i}]")
            name = check_header_operation_name(h.get("name"), f"{where}.{key}[{i}].name")
            value = require_str(h.get("value"), f"{where}.{key}[{i}].value")
            ops[key][name.lower()] = check_header_text(value, f"{where}.{key}[{i}].value")
    remove = tuple(
        check_header_operation_name(n, f"{where}.remove[{i}]").lower()
        for i, n in enumerate(limited(m.get("remove"), f"{where}.remove", 16))
    )
    return HeaderOperations(set=ops["set"], add=ops["add"], remove=remove)


def _path_modifier(raw: Any, where: str) -> PathModifier | None:
    if raw is None:
        return None
    m = require_mapping(raw, where)
    kind = require_str(m.get("type"), f"{where}.type", required=True)
    if kind == "ReplaceFullPath":
        value = require_str(m.get("replaceFullPath"), f"{where}.replaceFullPath", required=True)
    elif kind == "ReplacePrefixMatch":
        value = require_str(m.get("replacePrefixMatch"), f"{where}.replacePrefixMatch") or "/"
    else:
        raise ValidationError(
            f"{where}.type", f"{clip(kind)!r} is not ReplaceFullPath or ReplacePrefixMatch"
        )
    if not value.startswith("/"):
        raise ValidationError(where, f"path {clip(value)!r} must begin with '/'")
    check_header_text(value, where, "path")
    return PathModifier(kind, value)


def _cors(raw: Any, where: str) -> CorsPolicy:
    c = require_mapping(raw, where)
    origins = []
    for i, o in enumerate(limited(c.get("allowOrigins"), f"{where}.allowOrigins", 64)):
        text = require_str(o, f"{where}.allowOrigins[{i}]", required=True)
        if text == "*":
            origins.append(StringMatch("regex", ".*"))
        elif "*" in text:
            # A wildcard label: `https://*.example.com`.
            parts = [re.escape(p) for p in text.split("*")]
            origins.append(StringMatch("regex", "[^.]+".join(parts)))
        else:
            origins.append(StringMatch("exact", text))

    def strings(key: str) -> tuple[str, ...]:
        return tuple(
            require_str(v, f"{where}.{key}[{i}]", required=True)
            for i, v in enumerate(limited(c.get(key), f"{where}.{key}", 64))
        )

    max_age = c.get("maxAge")
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int)):
        raise ValidationError(f"{where}.maxAge", f"must be a number of seconds, got {max_age!r}")
    credentials = c.get("allowCredentials")
    if credentials is not None and not isinstance(credentials, bool):
        raise ValidationError(f"{where}.allowCredentials", "must be true or false")
    return CorsPolicy(
        allow_origins=tuple(origins),
        allow_methods=strings("allowMethods"),
        allow_headers=strings("allowHeaders"),
        expose_headers=strings("exposeHeaders"),
        max_age=float(max_age) if max_age is not None else None,
        allow_credentials=credentials,
    )


def _filters(raw: Any, where: str, namespace: str, allowed: tuple[str, ...]) -> Filters:
    out: dict[str, Any] = {}
    mirrors: list[MirrorFilter] = []
    for i, item in enumerate(limited(raw, where, MAX_FILTERS)):
        at = f"{where}[{i}]"
        f = require_mapping(item, at)
        kind = require_str(f.get("type"), f"{at}.type", required=True)
        if kind not in allowed:
            raise ValidationError(
                f"{at}.type",
                f"{clip(kind)!r} is not supported here; supported: {', '.join(allowed)}",
            )
        key = _FILTER_FIELDS[kind]
        body = f.get(key)
        if body is None:
            raise ValidationError(f"{at}.{key}", f"is required for type {kind}")
        if kind == "RequestMirror":
            m = require_mapping(body, f"{at}.{key}")
            ref = backend_ref(
                m.get("backendRef"), f"{at}.{key}.backendRef", namespace, weighted=False
            )
            percent = 100.0
            if m.get("percent") is not None:
                p = m["percent"]
                if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 100:
                    raise ValidationError(f"{at}.{key}.percent", f"must be 0-100, got {p!r}")
                percent = float(p)
            elif m.get("fraction") is not None:
                fr = require_mapping(m["fraction"], f"{at}.{key}.fraction")
                num, den = fr.get("numerator"), fr.get("denominator", 100)
                if (
                    not isinstance(num, int)
                    or not isinstance(den, int)
                    or isinstance(num, bool)
                    or den <= 0
                    or not 0 <= num <= den
                ):
                    raise ValidationError(
                        f"{at}.{key}.fraction",
                        "needs 0 <= numerator <= denominator, denominator > 0",
                    )
                percent = 100.0 * num / den
            mirrors.append(MirrorFilter(ref, percent))
            continue
        if kind in out:
            raise ValidationError(f"{at}.type", f"{kind} is given more than once")
        if kind == "RequestHeaderModifier":
            out[kind] = _header_modifier(body, f"{at}.{key}")
        elif kind == "ResponseHeaderModifier":
            out[kind] = _header_modifier(body, f"{at}.{key}")
        elif kind == "RequestRedirect":
            r = require_mapping(body, f"{at}.{key}")
            scheme = require_str(r.get("scheme"), f"{at}.{key}.scheme")
            if scheme not in ("", "http", "https"):
                raise ValidationError(
                    f"{at}.{key}.scheme", f"{clip(scheme)!r} is not http or https"
                )
            code = r.get("statusCode", 302)
            if code not in _REDIRECT_CODES:
                raise ValidationError(f"{at}.{key}.statusCode", f"unsupported code {code!r}")
            host = r.get("hostname")
            out[kind] = RedirectFilter(
                scheme=scheme,
                hostname=hostname(host, f"{at}.{key}.hostname") if host is not None else "",
                path=_path_modifier(r.get("path"), f"{at}.{key}.path"),
                port=require_port(r["port"], f"{at}.{key}.port") if r.get("port") else None,
                status_code=code,
            )
        elif kind == "URLRewrite":
            r = require_mapping(body, f"{at}.{key}")
            host = r.get("hostname")
            out[kind] = RewriteFilter(
                hostname=hostname(host, f"{at}.{key}.hostname") if host is not None else "",
                path=_path_modifier(r.get("path"), f"{at}.{key}.path"),
            )
        elif kind == "CORS":
            out[kind] = _cors(body, f"{at}.{key}")
    if "RequestRedirect" in out and "URLRewrite" in out:
        raise ValidationError(where, "RequestRedirect and URLRewrite cannot be used together")
    return Filters(
        request_headers=out.get("RequestHeaderModifier"),
        response_headers=out.get("ResponseHeaderModifier"),
        redirect=out.get("RequestRedirect"),
        rewrite=out.get("URLRewrite"),
        mirrors=tuple(mirrors),
        cors=out.get("CORS"),
    )


def _weighted_backends(
    raw: Any, where: str, namespace: str, allowed: tuple[str, ...]
) -> tuple[WeightedBackend, ...]:
    refs = backend_refs(raw, where, namespace)
    out = []
    for i, ref in enumerate(refs):
        item = require_mapping(require_list(raw, where)[i], f"{where}[{i}]")
        per = tuple(f for f in allowed if f in ("RequestHeaderModifier", "ResponseHeaderModifier"))
        out.append(
            WeightedBackend(
                ref, _filters(item.get("filters"), f"{where}[{i}].filters", namespace, per)
            )
        )
    return tuple(out)


def _retry(raw: Any, where: str) -> Retry | None:
    if raw is None:
        return None
    r = require_mapping(raw, where)
    attempts = r.get("attempts")
    if attempts is not None and (
        isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0
    ):
        raise ValidationError(f"{where}.attempts", f"must be 0 or more, got {attempts!r}")
    codes = []
    for i, c in enumerate(limited(r.get("codes"), f"{where}.codes", 32)):
        if isinstance(c, bool) or not isinstance(c, int) or not 400 <= c <= 599:
            raise ValidationError(f"{where}.codes[{i}]", f"must be 400-599, got {c!r}")
        codes.append(c)
    backoff = r.get("backoff")
    return Retry(
        attempts=attempts,
        codes=tuple(codes),
        backoff=parse_gep_duration(backoff, f"{where}.backoff") if backoff is not None else None,
    )


def _rule(raw: Any, i: int, namespace: str, kind: str) -> RouteRule:
    where = f"spec.rules[{i}]"
    r = require_mapping(raw, where)
    grpc = kind == "GRPCRoute"
    allowed = GRPC_FILTERS if grpc else HTTP_FILTERS
    match_of = _grpc_match if grpc else _http_match
    matches = tuple(
        match_of(m, f"{where}.matches[{j}]")
        for j, m in enumerate(limited(r.get("matches"), f"{where}.matches", MAX_MATCHES))
    )
    timeouts = require_mapping(r.get("timeouts"), f"{where}.timeouts")
    request = backend = None
    if timeouts.get("request") is not None:
        request = parse_gep_duration(timeouts["request"], f"{where}.timeouts.request")
    if timeouts.get("backendRequest") is not None:
        backend = parse_gep_duration(timeouts["backendRequest"], f"{where}.timeouts.backendRequest")
        if request and backend > request:
            raise ValidationError(
                f"{where}.timeouts.backendRequest", "must not be longer than timeouts.request"
            )
    filters = _filters(r.get("filters"), f"{where}.filters", namespace, allowed)
    backends = _weighted_backends(r.get("backendRefs"), f"{where}.backendRefs", namespace, allowed)
    if filters.redirect is not None and backends:
        raise ValidationError(f"{where}.backendRefs", "must be empty with a RequestRedirect filter")
    for f in (filters.redirect, filters.rewrite):
        # No matches is the default PathPrefix "/".
        if f is not None and f.path is not None and f.path.type == "ReplacePrefixMatch":
            if any(m.path is not None and m.path.type != "PathPrefix" for m in matches):
                raise ValidationError(
                    f"{where}.filters",
                    "ReplacePrefixMatch needs every match to be a PathPrefix match",
                )
    return RouteRule(
        index=i,
        name=require_str(r.get("name"), f"{where}.name"),
        matches=matches,
        filters=filters,
        backends=backends,
        request_timeout=request,
        backend_timeout=backend,
        retry=_retry(r.get("retry"), f"{where}.retry"),
    )


# Valid fields istiod does not translate either: the route works without them, and each one
# set is reported (a warning, and in the route's Accepted message), never dropped in silence.
SESSION_PERSISTENCE_NOTE = (
    "not supported (as in istiod, which has no per-route stateful session); "
    "requests are balanced without session affinity"
)


def _unsupported_fields(rules_raw: list[Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (f"spec.rules[{i}].sessionPersistence", SESSION_PERSISTENCE_NOTE)
        for i, r in enumerate(rules_raw)
        if isinstance(r, dict) and r.get("sessionPersistence") is not None
    )


def _parse(raw: dict[str, Any], kind: str) -> Route:
    meta, api = parse_api_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    parents = parent_refs(spec.get("parentRefs"), "spec.parentRefs", meta.namespace)
    names = hostnames(spec.get("hostnames"), "spec.hostnames") if kind != "TCPRoute" else ()
    rules_raw = limited(spec.get("rules"), "spec.rules", MAX_RULES)
    if kind in ("HTTPRoute", "GRPCRoute"):
        rules = tuple(_rule(r, i, meta.namespace, kind) for i, r in enumerate(rules_raw))
        unsupported = _unsupported_fields(rules_raw)
        if unsupported:
            meta = replace(meta, unapplied=meta.unapplied + unsupported)
        return Route(kind, meta, api, parents, names, rules=rules)
    if not rules_raw:
        raise ValidationError("spec.rules", "needs at least one rule")
    l4 = []
    for i, r in enumerate(rules_raw):
        rule = require_mapping(r, f"spec.rules[{i}]")
        refs = backend_refs(rule.get("backendRefs"), f"spec.rules[{i}].backendRefs", meta.namespace)
        if not refs:
            raise ValidationError(f"spec.rules[{i}].backendRefs", "needs at least one backend")
        l4.append(L4Rule(i, refs))
    if kind == "TLSRoute" and not names:
        raise ValidationError("spec.hostnames", "a TLSRoute needs at least one hostname (SNI)")
    return Route(kind, meta, api, parents, names, l4_rules=tuple(l4))


def parse_http_route(raw: dict[str, Any]) -> Route:
    return _parse(raw, "HTTPRoute")


def parse_grpc_route(raw: dict[str, Any]) -> Route:
    return _parse(raw, "GRPCRoute")


def parse_tls_route(raw: dict[str, Any]) -> Route:
    return _parse(raw, "TLSRoute")


def parse_tcp_route(raw: dict[str, Any]) -> Route:
    return _parse(raw, "TCPRoute")
