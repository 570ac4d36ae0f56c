"""networking.istio.io VirtualService (v1, v1beta1, v1alpha3): the HTTP routing subset istiolite
translates today, validated field by field.

A VirtualService without `hosts` is a delegate (istiod's rule): it routes nothing by itself and
only serves the `http[].delegate` routes of root VirtualServices, which are merged with it in
`virtualservice_delegate.py`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from istiolite.model.meta import ObjectMeta, parse_meta
from istiolite.model.regex import regex_error
from istiolite.model.validation import (
    MAX_DURATION_SECONDS,
    UINT32_MAX,
    ValidationError,
    check_header_operation_name,
    check_header_text,
    clip,
    optional_bool,
    require_list,
    require_mapping,
    require_port,
    require_str,
    require_string_map,
)
from istiolite.model.visibility import parse_export_to

# ASCII digits only: `\d` would also take other scripts' digits, which float() reads.
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?)(h|m|s|ms|us|µs|ns)$")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_HOST_LABEL = re.compile(r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Istio's weight and attempts fields are int32; the weights of one route become Envoy's
# weighted_clusters, whose sum must fit a uint32.
_INT32_MAX = 2**31 - 1
# Envoy's default max_direct_response_body_size_bytes, which istiolite does not raise.
MAX_DIRECT_RESPONSE_BODY = 4096


@dataclass(frozen=True, slots=True)
class StringMatch:
    kind: str  # exact | prefix | regex
    value: str


@dataclass(frozen=True, slots=True)
class HTTPMatch:
    name: str = ""
    uri: StringMatch | None = None
    ignore_uri_case: bool = False
    # (header name, match); a None match means "present".
    headers: tuple[tuple[str, StringMatch | None], ...] = ()
    without_headers: tuple[tuple[str, StringMatch | None], ...] = ()
    query_params: tuple[tuple[str, StringMatch | None], ...] = ()
    method: StringMatch | None = None
    authority: StringMatch | None = None
    scheme: StringMatch | None = None
    port: int | None = None
    # Only for requests from workloads with these labels / in this namespace.
    source_labels: dict[str, str] = field(default_factory=dict)
    source_namespace: str = ""
    # Only on these gateways ("mesh" = sidecars); overrides the VirtualService's `gateways`.
    gateways: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderOperations:
    set: dict[str, str] = field(default_factory=dict)
    add: dict[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Headers:
    request: HeaderOperations = HeaderOperations()
    response: HeaderOperations = HeaderOperations()


@dataclass(frozen=True, slots=True)
class Destination:
    host: str
    subset: str = ""
    port: int | None = None


@dataclass(frozen=True, slots=True)
class RouteDestination:
    destination: Destination
    weight: int = 0
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    uri: str = ""
    authority: str = ""
    scheme: str = ""
    port: int | None = None
    code: int = 301
    # Replaces the matched path prefix (the Gateway API's ReplacePrefixMatch).
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str = ""
    authority: str = ""
    uri_regex: tuple[str, str] | None = None  # (match, rewrite)


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int
    per_try_timeout: float | None = None
    retry_on: str = ""
    backoff: float | None = None  # seconds: the base interval between retries


@dataclass(frozen=True, slots=True)
class Fault:
    delay: float | None = None  # seconds
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Mirror:
    destination: Destination
    percent: float = 100.0
    # From the route's single `mirror` (with `mirrorPercentage`) rather than from `mirrors[]`:
    # delegation fills the two in separately, as istiod does.
    single: bool = False


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: float | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True, slots=True)
class Delegate:
    """`http[].delegate`: the VirtualService (one without hosts) whose routes this one takes."""

    name: str
    namespace: str  # the root's own when not given


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    name: str = ""
    match: tuple[HTTPMatch, ...] = ()
    route: tuple[RouteDestination, ...] = ()
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    rewrite: Rewrite | None = None
    timeout: float | None = None
    retries: Retries | None = None
    headers: Headers | None = None
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    cors: CorsPolicy | None = None
    # A root route: matches and policies here, the routes themselves from the delegate.
    delegate: Delegate | None = None
    # `mirrorPercentage` as written (None: not set), for delegation; `mirrors` has the effect.
    mirror_percentage: float | None = None


@dataclass(frozen=True, slots=True)
class TCPRoute:
    ports: tuple[int, ...]  # match[].port; empty = every port
    route: tuple[RouteDestination, ...]
    # (port or None, gateways) of each match; none: the route applies everywhere.
    matches: tuple[tuple[int | None, tuple[str, ...]], ...] = ()

    def applies(self, port: int, gateway: str, vs_namespace: str) -> bool:
        """Whether a connection on `port` through `gateway` ("mesh" or a Gateway's "ns/name")
        takes this route: some match fits both (istiod's tcp[].match)."""
        if not self.matches:
            return True
        return any(
            (number is None or number == port) and match_applies_on(gateways, gateway, vs_namespace)
            for number, gateways in self.matches
        )


@dataclass(frozen=True, slots=True)
class TLSMatch:
    sni_hosts: tuple[str, ...]
    port: int | None = None
    # Only on these gateways ("mesh" = sidecars); overrides the VirtualService's `gateways`.
    gateways: tuple[str, ...] = ()

    def applies_on(self, gateway: str, vs_namespace: str) -> bool:
        """Whether the match is used on `gateway` ("mesh", or a Gateway's "ns/name")."""
        return match_applies_on(self.gateways, gateway, vs_namespace)


def match_applies_on(gateways: tuple[str, ...], gateway: str, vs_namespace: str) -> bool:
    """A route match's `gateways` (none: wherever its VirtualService applies); a bare Gateway
    name is in the VirtualService's namespace."""
    if not gateways:
        return True
    return gateway in {g if g == "mesh" or "/" in g else f"{vs_namespace}/{g}" for g in gateways}


@dataclass(frozen=True, slots=True)
class TLSRoute:
    """Unterminated TLS, routed by the SNI of the client hello."""

    match: tuple[TLSMatch, ...]
    route: tuple[RouteDestination, ...]


@dataclass(frozen=True, slots=True)
class VirtualService:
    meta: ObjectMeta
    hosts: tuple[str, ...]
    gateways: tuple[str, ...]
    export_to: tuple[str, ...]
    http: tuple[HTTPRoute, ...]
    tcp: tuple[TCPRoute, ...] = ()
    tls: tuple[TLSRoute, ...] = ()

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def uses_source_match(self) -> bool:
        return any(m.source_labels or m.source_namespace for h in self.http for m in h.match)

    @property
    def applies_to_sidecars(self) -> bool:
        return not self.gateways or "mesh" in self.gateways

    @property
    def is_delegate(self) -> bool:
        """No hosts: only usable as the target of another VirtualService's `http[].delegate`."""
        return not self.hosts

    @property
    def is_root(self) -> bool:
        return any(h.delegate is not None for h in self.http)


def parse_duration(value: Any, where: str) -> float:
    """A protobuf Duration string ("1.5s", "300ms"), in seconds."""
    if not isinstance(value, str):
        raise ValidationError(where, f"must be a duration like '1s' or '250ms', got {value!r}")
    found = _DURATION.match(value.strip())
    if not found:
        raise ValidationError(where, f"{clip(value)!r} is not a duration like '1s' or '250ms'")
    seconds = float(found.group(1)) * _UNIT_SECONDS[found.group(3)]
    # Envoy refuses durations from 2^63 ns (~292 years) on; a longer one (or one whose digits
    # make an infinite float) cannot be put in any Envoy config.
    if not seconds <= MAX_DURATION_SECONDS:
        raise ValidationError(
            where, f"{clip(value)!r} is longer than the {MAX_DURATION_SECONDS}s Envoy accepts"
        )
    return seconds


def validate_host(host: Any, where: str) -> str:
    """A host as istiod accepts it (a DNS name, `*` first); upper case is allowed as by istiod
    and the name is returned lower-cased, as DNS and Envoy's domain matching compare it."""
    text = require_str(host, where, required=True)
    labels = text.lower().split(".")
    if any(not _HOST_LABEL.match(label) for label in labels) or (
        "*" in text and not text.startswith("*")
    ):
        raise ValidationError(where, f"{text!r} is not a valid host (DNS name, '*' first)")
    return text.lower()


def _string_match(raw: Any, where: str, *, allow_empty: bool = False) -> StringMatch | None:
    m = require_mapping(raw, where)
    if not m:
        if allow_empty:
            return None  # {} on a header means "present"
        raise ValidationError(where, "needs one of exact, prefix or regex")
    kinds = [k for k in ("exact", "prefix", "regex") if k in m]
    unknown = set(m) - {"exact", "prefix", "regex"}
    if unknown:
        raise ValidationError(f"{where}.{sorted(unknown)[0]}", "unknown match type")
    if len(kinds) != 1:
        raise ValidationError(where, "exactly one of exact, prefix or regex is allowed")
    kind = kinds[0]
    value = require_str(m[kind], f"{where}.{kind}")
    if kind == "regex":
        reason = regex_error(value)
        if reason is not None:
            raise ValidationError(f"{where}.regex", f"invalid regular expression: {reason}")
    return StringMatch(kind, value)


def _named_matches(raw: Any, where: str) -> tuple[tuple[str, StringMatch | None], ...]:
    out = []
    for name, value in require_mapping(raw, where).items():
        at = f"{where}.{name}"
        check_header_text(require_str(name, at, required=True), at, "name")
        out.append((str(name).lower(), _string_match(value, at, allow_empty=True)))
    return tuple(sorted(out, key=lambda item: item[0]))


def _match(raw: Any, where: str) -> HTTPMatch:
    m = require_mapping(raw, where)
    uri = _string_match(m["uri"], f"{where}.uri") if "uri" in m else None
    port = require_port(m["port"], f"{where}.port") if m.get("port") is not None else None
    return HTTPMatch(
        name=require_str(m.get("name"), f"{where}.name"),
        uri=uri,
        ignore_uri_case=bool(optional_bool(m.get("ignoreUriCase"), f"{where}.ignoreUriCase")),
        headers=_named_matches(m.get("headers"), f"{where}.headers"),
        without_headers=_named_matches(m.get("withoutHeaders"), f"{where}.withoutHeaders"),
        query_params=_named_matches(m.get("queryParams"), f"{where}.queryParams"),
        method=_string_match(m["method"], f"{where}.method") if "method" in m else None,
        authority=_string_match(m["authority"], f"{where}.authority") if "authority" in m else None,
        scheme=_string_match(m["scheme"], f"{where}.scheme") if "scheme" in m else None,
        port=port,
        source_labels=require_string_map(m.get("sourceLabels"), f"{where}.sourceLabels"),
        source_namespace=require_str(m.get("sourceNamespace"), f"{where}.sourceNamespace"),
        gateways=tuple(
            require_str(g, f"{where}.gateways[{i}]", required=True)
            for i, g in enumerate(require_list(m.get("gateways"), f"{where}.gateways"))
        ),
    )


def _header_ops(raw: Any, where: str) -> HeaderOperations:
    m = require_mapping(raw, where)
    remove = require_list(m.get("remove"), f"{where}.remove")
    for i, name in enumerate(remove):
        check_header_operation_name(name, f"{where}.remove[{i}]")
    ops = {}
    for key in ("set", "add"):
        ops[key] = require_string_map(m.get(key), f"{where}.{key}")
        for name, value in ops[key].items():
            check_header_operation_name(name, f"{where}.{key}.{name}")
            check_header_text(value, f"{where}.{key}.{name}")
    return HeaderOperations(set=ops["set"], add=ops["add"], remove=tuple(remove))


def _headers(raw: Any, where: str) -> Headers | None:
    if raw is None:
        return None
    m = require_mapping(raw, where)
    return Headers(
        request=_header_ops(m.get("request"), f"{where}.request"),
        response=_header_ops(m.get("response"), f"{where}.response"),
    )


def _destination(raw: Any, where: str) -> Destination:
    d = require_mapping(raw, where)
    port = None
    if d.get("port") is not None:
        p = require_mapping(d["port"], f"{where}.port")
        port = require_port(p.get("number"), f"{where}.port.number")
    return Destination(
        host=validate_host(d.get("host"), f"{where}.host"),
        subset=require_str(d.get("subset"), f"{where}.subset"),
        port=port,
    )


def _percent(raw: Any, where: str, *, legacy: Any = None) -> float:
    """`percentage: {value: 12.5}` (0-100), or the deprecated integer `percent`."""
    if raw is None:
        if legacy is None:
            return 100.0
        if isinstance(legacy, bool) or not isinstance(legacy, int) or not 0 <= legacy <= 100:
            raise ValidationError(where.rsplit(".", 1)[0] + ".percent", "must be 0-100")
        return float(legacy)
    value = require_mapping(raw, where).get("value", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ValidationError(f"{where}.value", f"must be between 0 and 100, got {value!r}")
    return float(value)


def _fault(raw: Any, where: str) -> Fault | None:
    if raw is None:
        return None
    f = require_mapping(raw, where)
    delay = delay_percent = abort_status = None
    abort_percent = 100.0
    if f.get("delay") is not None:
        d = require_mapping(f["delay"], f"{where}.delay")
        # exponentialDelay alone is valid Istio, not translated (a warning says so).
        if d.get("fixedDelay") is None and d.get("exponentialDelay") is None:
            raise ValidationError(f"{where}.delay.fixedDelay", "is required")
        if d.get("fixedDelay") is not None:
            delay = parse_duration(d["fixedDelay"], f"{where}.delay.fixedDelay")
            # Envoy's fixed_delay must be positive; istiod asks for at least 1ms.
            if delay < 0.001:
                raise ValidationError(f"{where}.delay.fixedDelay", "must be at least 1ms")
        delay_percent = _percent(
            d.get("percentage"), f"{where}.delay.percentage", legacy=d.get("percent")
        )
    if f.get("abort") is not None:
        a = require_mapping(f["abort"], f"{where}.abort")
        status = a.get("httpStatus")
        # grpcStatus / http2Error alone are valid Istio, not translated (a warning says so).
        if status is not None or not (a.get("grpcStatus") or a.get("http2Error")):
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
                raise ValidationError(
                    f"{where}.abort.httpStatus", f"must be 200-599, got {status!r}"
                )
            abort_status = status
        abort_percent = _percent(a.get("percentage"), f"{where}.abort.percentage")
    if f.get("delay") is None and f.get("abort") is None:
        raise ValidationError(where, "needs a delay or an abort")
    if delay is None and abort_status is None:
        return None
    return Fault(
        delay=delay,
        delay_percent=delay_percent if delay_percent is not None else 100.0,
        abort_status=abort_status,
        abort_percent=abort_percent,
    )


def _mirrors(r: dict[str, Any], where: str) -> tuple[Mirror, ...]:
    out: list[Mirror] = []
    if r.get("mirror") is not None:
        percent = _percent(r.get("mirrorPercentage"), f"{where}.mirrorPercentage")
        out.append(Mirror(_destination(r["mirror"], f"{where}.mirror"), percent, single=True))
    for i, item in enumerate(require_list(r.get("mirrors"), f"{where}.mirrors")):
        m = require_mapping(item, f"{where}.mirrors[{i}]")
        percent = _percent(m.get("percentage"), f"{where}.mirrors[{i}].percentage")
        out.append(
            Mirror(_destination(m.get("destination"), f"{where}.mirrors[{i}].destination"), percent)
        )
    return tuple(out)


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    items = require_list(raw, where)
    return tuple(require_str(v, f"{where}[{i}]", required=True) for i, v in enumerate(items))


def _cors(raw: Any, where: str) -> CorsPolicy | None:
    if raw is None:
        return None
    c = require_mapping(raw, where)
    origins = [
        _string_match(o, f"{where}.allowOrigins[{i}]")
        for i, o in enumerate(require_list(c.get("allowOrigins"), f"{where}.allowOrigins"))
    ]
    origins += [
        StringMatch("exact", o) for o in _strings(c.get("allowOrigin"), f"{where}.allowOrigin")
    ]
    max_age = c.get("maxAge")
    return CorsPolicy(
        allow_origins=tuple(o for o in origins if o is not None),
        allow_methods=_strings(c.get("allowMethods"), f"{where}.allowMethods"),
        allow_headers=_strings(c.get("allowHeaders"), f"{where}.allowHeaders"),
        expose_headers=_strings(c.get("exposeHeaders"), f"{where}.exposeHeaders"),
        max_age=parse_duration(max_age, f"{where}.maxAge") if max_age is not None else None,
        allow_credentials=optional_bool(c.get("allowCredentials"), f"{where}.allowCredentials"),
    )


def _delegate(raw: Any, where: str, namespace: str, in_delegate: bool) -> Delegate | None:
    if raw is None:
        return None
    if in_delegate:
        raise ValidationError(
            where,
            "a delegate VirtualService (one without hosts) cannot delegate again",
        )
    d = require_mapping(raw, where)
    name = require_str(d.get("name"), f"{where}.name", required=True)
    own = require_str(d.get("namespace"), f"{where}.namespace")
    if own and not _DNS_LABEL.match(own):
        raise ValidationError(f"{where}.namespace", f"{own!r} is not a valid namespace name")
    return Delegate(name=name, namespace=own or namespace)


def _http_route(raw: Any, where: str, namespace: str = "", in_delegate: bool = False) -> HTTPRoute:
    r = require_mapping(raw, where)
    delegate = _delegate(r.get("delegate"), f"{where}.delegate", namespace, in_delegate)
    if delegate is not None:
        # As istiod's validation of a root route: the delegate's routes say where requests go.
        for key in ("route", "redirect", "directResponse"):
            if r.get(key) is not None:
                raise ValidationError(
                    f"{where}.{key}",
                    f"a route with delegate must not specify {key}: the delegate "
                    "VirtualService's routes decide where its requests go",
                )
    routes = []
    for i, item in enumerate(require_list(r.get("route"), f"{where}.route")):
        rd = require_mapping(item, f"{where}.route[{i}]")
        weight = _int32(rd.get("weight", 0), f"{where}.route[{i}].weight")
        routes.append(
            RouteDestination(
                destination=_destination(rd.get("destination"), f"{where}.route[{i}].destination"),
                weight=weight,
                headers=_headers(rd.get("headers"), f"{where}.route[{i}].headers"),
            )
        )
    _check_weight_sum(routes, f"{where}.route")
    redirect = direct = None
    if r.get("redirect") is not None:
        rr = require_mapping(r["redirect"], f"{where}.redirect")
        code = rr.get("redirectCode", 301)
        if code not in (301, 302, 303, 307, 308):
            raise ValidationError(f"{where}.redirect.redirectCode", f"unsupported code {code!r}")
        redirect = Redirect(
            uri=require_str(rr.get("uri"), f"{where}.redirect.uri"),
            authority=require_str(rr.get("authority"), f"{where}.redirect.authority"),
            scheme=require_str(rr.get("scheme"), f"{where}.redirect.scheme"),
            port=require_port(rr["port"], f"{where}.redirect.port") if "port" in rr else None,
            code=code,
        )
    if r.get("directResponse") is not None:
        dr = require_mapping(r["directResponse"], f"{where}.directResponse")
        status = dr.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValidationError(
                f"{where}.directResponse.status", f"must be 200-599, got {status!r}"
            )
        body = require_mapping(dr.get("body"), f"{where}.directResponse.body")
        text = require_str(body.get("string"), f"{where}.directResponse.body.string")
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_DIRECT_RESPONSE_BODY:
            raise ValidationError(
                f"{where}.directResponse.body.string",
                f"is {size} bytes; Envoy takes at most {MAX_DIRECT_RESPONSE_BODY}",
            )
        direct = DirectResponse(status=status, body=text)
    actions = sum(x is not None and x != () for x in (tuple(routes) or None, redirect, direct))
    if actions != 1 and delegate is None:
        raise ValidationError(
            where,
            "exactly one of route, redirect, directResponse or delegate is required"
            if not in_delegate
            else "exactly one of route, redirect or directResponse is required",
        )
    rewrite = None
    if r.get("rewrite") is not None:
        rw = require_mapping(r["rewrite"], f"{where}.rewrite")
        regex = None
        if rw.get("uriRegexRewrite") is not None:
            rx = require_mapping(rw["uriRegexRewrite"], f"{where}.rewrite.uriRegexRewrite")
            pattern = require_str(
                rx.get("match"), f"{where}.rewrite.uriRegexRewrite.match", required=True
            )
            reason = regex_error(pattern)
            if reason is not None:
                raise ValidationError(
                    f"{where}.rewrite.uriRegexRewrite.match",
                    f"invalid regular expression: {reason}",
                )
            regex = (pattern, require_str(rx.get("rewrite"), f"{where}.rewrite.uriRegexRewrite"))
        rewrite = Rewrite(
            uri=require_str(rw.get("uri"), f"{where}.rewrite.uri"),
            authority=require_str(rw.get("authority"), f"{where}.rewrite.authority"),
            uri_regex=regex,
        )
    retries = None
    if r.get("retries") is not None:
        rt = require_mapping(r["retries"], f"{where}.retries")
        attempts = _int32(rt.get("attempts", 0), f"{where}.retries.attempts")
        per_try = rt.get("perTryTimeout")
        backoff = rt.get("backoff")
        retries = Retries(
            attempts=attempts,
            per_try_timeout=parse_duration(per_try, f"{where}.retries.perTryTimeout")
            if per_try is not None
            else None,
            retry_on=require_str(rt.get("retryOn"), f"{where}.retries.retryOn"),
            backoff=parse_duration(backoff, f"{where}.retries.backoff")
            if backoff is not None
            else None,
        )
    timeout = r.get("timeout")
    return HTTPRoute(
        name=require_str(r.get("name"), f"{where}.name"),
        match=tuple(
            _match(m, f"{where}.match[{i}]")
            for i, m in enumerate(require_list(r.get("match"), f"{where}.match"))
        ),
        route=tuple(routes),
        redirect=redirect,
        direct_response=direct,
        rewrite=rewrite,
        timeout=parse_duration(timeout, f"{where}.timeout") if timeout is not None else None,
        retries=retries,
        headers=_headers(r.get("headers"), f"{where}.headers"),
        fault=_fault(r.get("fault"), f"{where}.fault"),
        mirrors=_mirrors(r, f"{where}"),
        cors=_cors(r.get("corsPolicy"), f"{where}.corsPolicy"),
        delegate=delegate,
        mirror_percentage=_percent(r["mirrorPercentage"], f"{where}.mirrorPercentage")
        if r.get("mirrorPercentage") is not None
        else None,
    )


def _tcp_route(raw: Any, where: str) -> TCPRoute:
    r = require_mapping(raw, where)
    ports: list[int] = []
    matches: list[tuple[int | None, tuple[str, ...]]] = []
    for i, item in enumerate(require_list(r.get("match"), f"{where}.match")):
        at = f"{where}.match[{i}]"
        m = require_mapping(item, at)
        port = require_port(m["port"], f"{at}.port") if m.get("port") is not None else None
        if port is not None:
            ports.append(port)
        gateways = tuple(
            require_str(g, f"{at}.gateways[{k}]", required=True)
            for k, g in enumerate(require_list(m.get("gateways"), f"{at}.gateways"))
        )
        matches.append((port, gateways))
    return TCPRoute(
        ports=tuple(ports),
        route=_l4_destinations(r.get("route"), f"{where}.route"),
        matches=tuple(matches),
    )


def _host_covers(pattern: str, host: str) -> bool:
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) or (host.startswith("*.") and host[1:].endswith(suffix))
    return False


def _tls_route(raw: Any, where: str, hosts: tuple[str, ...]) -> TLSRoute:
    r = require_mapping(raw, where)
    matches = []
    raw_matches = require_list(r.get("match"), f"{where}.match")
    if not raw_matches:
        raise ValidationError(f"{where}.match", "a TLS route needs at least one match")
    for i, item in enumerate(raw_matches):
        at = f"{where}.match[{i}]"
        m = require_mapping(item, at)
        snis = require_list(m.get("sniHosts"), f"{at}.sniHosts")
        if not snis:
            raise ValidationError(f"{at}.sniHosts", "at least one SNI host is required")
        sni_hosts = []
        for j, sni in enumerate(snis):
            name = validate_host(sni, f"{at}.sniHosts[{j}]").lower()
            # As Istio: an SNI host must fall under one of the VirtualService's hosts.
            if not any(_host_covers(h.lower(), name) for h in hosts):
                raise ValidationError(
                    f"{at}.sniHosts[{j}]", f"{name!r} matches none of the VirtualService's hosts"
                )
            sni_hosts.append(name)
        port = require_port(m["port"], f"{at}.port") if m.get("port") is not None else None
        gateways = tuple(
            require_str(g, f"{at}.gateways[{k}]", required=True)
            for k, g in enumerate(require_list(m.get("gateways"), f"{at}.gateways"))
        )
        matches.append(TLSMatch(sni_hosts=tuple(sni_hosts), port=port, gateways=gateways))
    return TLSRoute(match=tuple(matches), route=_l4_destinations(r.get("route"), f"{where}.route"))


def _l4_destinations(raw: Any, where: str) -> tuple[RouteDestination, ...]:
    """tcp[] and tls[] routes: destinations with weights, without HTTP extras."""
    routes = []
    for i, item in enumerate(require_list(raw, where)):
        rd = require_mapping(item, f"{where}[{i}]")
        weight = _int32(rd.get("weight", 0), f"{where}[{i}].weight")
        destination = _destination(rd.get("destination"), f"{where}[{i}].destination")
        routes.append(RouteDestination(destination=destination, weight=weight))
    if not routes:
        raise ValidationError(where, "at least one destination is required")
    _check_weight_sum(routes, where)
    return tuple(routes)


def _int32(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT32_MAX:
        raise ValidationError(where, f"must be an integer from 0 to {_INT32_MAX}, got {value!r}")
    return value


def _check_weight_sum(routes: list[RouteDestination], where: str) -> None:
    total = sum(rd.weight for rd in routes)
    if len(routes) > 1 and total == 0:
        raise ValidationError(where, "weights must add up to more than 0")
    if total > UINT32_MAX:
        raise ValidationError(where, f"weights add up to {total}, more than {UINT32_MAX}")


def parse_virtual_service(raw: dict[str, Any]) -> VirtualService:
    meta = parse_meta(raw, namespaced=True)
    spec = require_mapping(raw.get("spec"), "spec")
    hosts = require_list(spec.get("hosts"), "spec.hosts")
    gateways = require_list(spec.get("gateways"), "spec.gateways")
    # As istiod: no hosts makes a delegate, which routes only as part of a root VirtualService
    # (its hosts and gateways) and so takes http routes alone.
    in_delegate = not hosts
    if in_delegate:
        if not require_list(spec.get("http"), "spec.http"):
            raise ValidationError(
                "spec.hosts",
                "at least one host is required (only a delegate VirtualService, with http "
                "routes that another VirtualService's http[].delegate takes, has none)",
            )
        for key, what in (("gateways", "gateways"), ("tcp", "tcp routes"), ("tls", "tls routes")):
            if require_list(spec.get(key), f"spec.{key}"):
                raise ValidationError(
                    f"spec.{key}",
                    f"a delegate VirtualService (one without hosts) must have no {what}; "
                    "the root VirtualService's hosts and gateways apply",
                )
    for i, gw in enumerate(gateways):
        require_str(gw, f"spec.gateways[{i}]", required=True)
    export_to = parse_export_to(spec.get("exportTo"), "spec.exportTo", meta.namespace)
    valid_hosts = tuple(validate_host(h, f"spec.hosts[{i}]") for i, h in enumerate(hosts))
    return VirtualService(
        meta=meta,
        hosts=valid_hosts,
        gateways=tuple(gateways),
        export_to=export_to,
        http=tuple(
            _http_route(r, f"spec.http[{i}]", meta.namespace, in_delegate)
            for i, r in enumerate(require_list(spec.get("http"), "spec.http"))
        ),
        tcp=tuple(
            _tcp_route(r, f"spec.tcp[{i}]")
            for i, r in enumerate(require_list(spec.get("tcp"), "spec.tcp"))
        ),
        tls=tuple(
            _tls_route(r, f"spec.tls[{i}]", valid_hosts)
            for i, r in enumerate(require_list(spec.get("tls"), "spec.tls"))
        ),
    )
