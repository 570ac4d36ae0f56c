"""Hypothesis strategies for the Istio kinds, built from their field schema (model/schema.py).

The schema knows every field name and which fields hold messages; it does not know scalar types,
so a scalar's values are picked by its field name (durations, uint32 counts, ports, hosts, header
maps, regexes …), and each is mixed with hostile values: numbers past what Envoy's protos hold,
durations like `1e400s`, CRLF and pseudo-header names, regexes RE2 refuses, long and non-ASCII
strings, and values of the wrong shape. Hosts lean on the services of the fuzz mesh
(tests/support/fuzz_pipeline.py) so that what validates is also translated.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from istiolite.model import kinds, schema
from istiolite.model.schema import MapOf, Msg

SA = st.SearchStrategy[Any]
# A path of field names to a scalar field ("*" steps over a map key), ending in BAD when the
# field gets a hostile value.
Target = tuple[str, ...]
BAD = "<hostile>"

# Message fields that hold a list of messages (the schema says "a message, or a list of messages").
REPEATED = frozenset(
    {
        ("VirtualService", "http"),
        ("VirtualService", "tls"),
        ("VirtualService", "tcp"),
        ("HTTPRoute", "match"),
        ("HTTPRoute", "route"),
        ("HTTPRoute", "mirrors"),
        ("TLSRoute", "match"),
        ("TLSRoute", "route"),
        ("TCPRoute", "match"),
        ("TCPRoute", "route"),
        ("CorsPolicy", "allowOrigins"),
        ("DestinationRule", "subsets"),
        ("TrafficPolicy", "portLevelSettings"),
        ("LocalityLoadBalancerSetting", "distribute"),
        ("LocalityLoadBalancerSetting", "failover"),
        ("HTTPCookie", "attributes"),
        ("Gateway", "servers"),
        ("ServerTLSSettings", "tlsCertificates"),
        ("ServiceEntry", "ports"),
        ("ServiceEntry", "endpoints"),
        ("Sidecar", "ingress"),
        ("Sidecar", "egress"),
    }
)

# Fields (by message) set in most examples, so that objects validate and are translated.
USUALLY = {
    "VirtualService": ("hosts", "http"),
    "HTTPRouteDestination": ("destination",),
    "RouteDestination": ("destination",),
    "Destination": ("host",),
    "DestinationRule": ("host", "trafficPolicy"),
    "Gateway": ("selector", "servers"),
    "Server": ("port", "hosts"),
    "Port": ("number", "protocol", "name"),
    "ServiceEntry": ("hosts", "ports", "resolution"),
    "WorkloadEntry": ("address",),
    "IstioEgressListener": ("hosts",),
    "IstioIngressListener": ("port",),
    "Subset": ("name", "labels"),
    "HTTPCookie": ("name",),
    "TLSMatchAttributes": ("sniHosts",),
    "HTTPDirectResponse": ("status",),
    "Delegate": ("name",),
    "TCPRoute": ("route",),
    "TLSRoute": ("match", "route"),
    "PortSelector": ("number",),
    "TrafficPolicy.PortTrafficPolicy": ("port",),
}

# Fields of which a message sets exactly one in most examples (several is a validation error).
ONE_OF = {
    "HTTPRoute": ("route", "redirect", "directResponse", "delegate"),
    "StringMatch": ("exact", "prefix", "regex"),
    "ConnectionPoolSettings": ("tcp", "http"),
    "Delay": ("fixedDelay", "exponentialDelay"),
}

# --- hostile values ----------------------------------------------------------------------------

HUGE_INTS = [-1, 0, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**64, 10**30]
BAD_DURATIONS = [
    "1e400s",
    "100000000000000000000h",
    "315576000001s",
    "-1s",
    "0s",
    "1e-12s",
    "5",
    "s",
    "1.5.5s",
    "99999999999999999999ms",
    "nan s",
]
BAD_HEADER_NAMES = [":path", ":authority", "host", "Host", "a\r\nb", "x y", "x:y", "é", "x" * 300]
BAD_REGEXES = ["(?=a)a", r"(a)\1", "[", "a{2000}{2000}", "(.|.)*X", "(?i", r"\C"]
GOOD_REGEXES = [".*", "^/api/.+$", r"\pL+", "[a-z]{1,8}", "(?i)abc"]
ODD_STRINGS = ["", " ", "x" * 5000, "ünïcødé-☃", "a\r\nb: c", "\x00", "../..", "*", "-"]
WRONG_SHAPES: list[Any] = [None, 7, "x", [], {}, True, 1.5, [1, "a"], {"": None}]

SERVICES = ["reviews", "details", "db", "ext.example.com"]
HOSTS = [*SERVICES, "reviews.default.svc.cluster.local", "*", "*.example.com", "new.example.com"]


def hostile_scalar() -> SA:
    return st.one_of(
        st.sampled_from(HUGE_INTS),
        st.sampled_from(BAD_DURATIONS),
        st.sampled_from(BAD_HEADER_NAMES),
        st.sampled_from(BAD_REGEXES),
        st.sampled_from(ODD_STRINGS),
        st.sampled_from(WRONG_SHAPES),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
    )


def _mixed(valid: SA) -> SA:
    # Mostly plausible values, so that objects get past validation into generation: an object
    # sets many fields, and one hostile value among them is enough to reject it.
    return _weighted(valid, hostile_scalar(), 40)


def _rarely(good: SA, bad: SA) -> SA:
    """`good`, and now and then `bad` (the hostile values particular to a field)."""
    return _weighted(good, bad, 12)


def _weighted(good: SA, bad: SA, odds: int) -> SA:
    """`bad` about once in `odds` draws (st.one_of would merge repeated branches: no weights)."""
    return st.integers(1, odds).flatmap(lambda i: bad if i == odds else good)


# --- plausible values, by field name -----------------------------------------------------------

_DURATION = _rarely(
    st.one_of(
        st.sampled_from(["1s", "250ms", "3s", "1m", "1h", "0.5s", "10us", "2h"]),
        st.integers(1, 10**6).map(lambda n: f"{n}ms"),
    ),
    st.sampled_from(BAD_DURATIONS),
)
_UINT = _rarely(st.integers(0, 1000), st.sampled_from(HUGE_INTS))
_PORT = _rarely(st.sampled_from([80, 443, 3306, 9080, 8080]), st.sampled_from([0, 65536, -1]))
_NAME = st.one_of(
    st.sampled_from(["v1", "v2", "http", "tcp", "web", "tls", "cookie"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
)
_LABELS = st.dictionaries(st.sampled_from(["app", "version", "istio", "tier"]), _NAME, max_size=2)
_HEADER_NAME = _rarely(
    st.sampled_from(["x-user", "x-version", "end-user", "cookie"]),
    st.sampled_from(BAD_HEADER_NAMES),
)
_HEADER_VALUE = _rarely(_NAME, st.sampled_from(["a\r\nb", "x" * 5000, "ünï"]))
_HEADER_MAP = st.dictionaries(_HEADER_NAME, _HEADER_VALUE, max_size=2)
_HOST = _rarely(st.sampled_from(HOSTS), st.sampled_from(ODD_STRINGS))
_HOSTS = st.lists(_HOST, min_size=1, max_size=2)
_REGEX = _rarely(st.sampled_from(GOOD_REGEXES), st.sampled_from(BAD_REGEXES))
_STRINGS = st.lists(_NAME, max_size=3)
_PERCENT = _rarely(
    st.floats(0, 100), st.sampled_from([-1.0, 100.5, 1e308, float("inf"), float("nan")])
)

_BY_NAME: dict[str, SA] = {
    **dict.fromkeys(
        [
            "timeout",
            "perTryTimeout",
            "connectTimeout",
            "maxConnectionDuration",
            "idleTimeout",
            "interval",
            "baseEjectionTime",
            "ttl",
            "fixedDelay",
            "time",
            "maxAge",
            "duration",
        ],
        _DURATION,
    ),
    **dict.fromkeys(
        [
            "weight",
            "attempts",
            "maxConnections",
            "http1MaxPendingRequests",
            "http2MaxRequests",
            "maxRequestsPerConnection",
            "maxRetries",
            "consecutiveGatewayErrors",
            "consecutive5xxErrors",
            "consecutiveErrors",
            "maxEjectionPercent",
            "minHealthPercent",
            "probes",
            "minimumRingSize",
            "tableSize",
            "warmupDurationSecs",
            "maxConcurrentStreams",
        ],
        _UINT,
    ),
    **dict.fromkeys(["number", "port", "targetPort"], _PORT),
    "status": _rarely(st.sampled_from([200, 204, 404, 503]), st.sampled_from([0, 99, 600, 2**32])),
    "httpStatus": _rarely(st.sampled_from([400, 503]), st.sampled_from([0, 1000])),
    "redirectCode": st.sampled_from([301, 302, 308, 200, 0]),
    **dict.fromkeys(["value", "percent"], _PERCENT),
    **dict.fromkeys(["hosts", "sniHosts"], _HOSTS),
    **dict.fromkeys(["host"], _HOST),
    **dict.fromkeys(["labels", "matchLabels", "sourceLabels"], _LABELS),
    "selector": st.one_of(st.just({"istio": "ingressgateway"}), _LABELS),
    **dict.fromkeys(["set", "add"], _HEADER_MAP),
    "remove": st.lists(_HEADER_NAME, max_size=2),
    **dict.fromkeys(["regex"], _REGEX),
    "exact": _rarely(_NAME, st.sampled_from(ODD_STRINGS)),
    "prefix": _rarely(st.sampled_from(["/", "/api", "/a/b/"]), st.sampled_from(ODD_STRINGS)),
    "uri": st.sampled_from(["/", "/v2", "/api/", "", "x" * 5000, "/a\r\nb"]),
    "rewrite": st.sampled_from(["/", "/new/\\1", "\\1"]),
    "authority": st.sampled_from(["example.com", "reviews:9080", "", "a\r\nb"]),
    "gateways": st.lists(st.sampled_from(["gw", "mesh", "default/gw", "other/none"]), max_size=2),
    "exportTo": st.lists(st.sampled_from([".", "*", "default", "~", "Bad_NS"]), max_size=2),
    "addresses": st.lists(
        st.sampled_from(["10.9.0.1", "10.9.0.0/24", "fd00::1", "300.1.1.1", "x"]), max_size=2
    ),
    "address": st.sampled_from(["10.2.0.1", "10.2.0.2", "fd00::2", "ext.example.com", "300.0.0.1"]),
    "string": _rarely(st.sampled_from(["ok", "", "ünï"]), st.just("x" * 5000)),
    "protocol": st.sampled_from(["HTTP", "HTTP2", "GRPC", "TCP", "TLS", "HTTPS", "MONGO", "http"]),
    "mode": st.sampled_from(
        ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "PASSTHROUGH", "ALLOW_ANY", "REGISTRY_ONLY"]
    ),
    "simple": st.sampled_from(
        ["ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "UNSPECIFIED"]
    ),
    "resolution": st.sampled_from(["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "MAGIC"]),
    "location": st.sampled_from(["MESH_EXTERNAL", "MESH_INTERNAL"]),
    "h2UpgradePolicy": st.sampled_from(["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE", "X"]),
    "captureMode": st.sampled_from(["DEFAULT", "IPTABLES", "NONE"]),
    "scheme": st.sampled_from(["http", "https", ""]),
    **dict.fromkeys(
        ["minProtocolVersion", "maxProtocolVersion"],
        st.sampled_from(["TLS_AUTO", "TLSV1_2", "TLSV1_3", "TLSV9"]),
    ),
    "retryOn": st.sampled_from(["5xx", "gateway-error,connect-failure", "", "nonsense"]),
    **dict.fromkeys(
        [
            "httpsRedirect",
            "useSourceIp",
            "ignoreUriCase",
            "useClientProtocol",
            "insecureSkipVerify",
            "allowCredentials",
            "enabled",
            "retryRemoteLocalities",
            "retryIgnorePreviousHosts",
            "splitExternalLocalOriginErrors",
        ],
        st.booleans(),
    ),
    "ports": st.dictionaries(st.sampled_from(["http", "tcp"]), _PORT, max_size=2),
    "to": st.one_of(
        st.dictionaries(st.sampled_from(["r1/z1/*", "r2/*"]), _UINT, max_size=2),
        st.sampled_from(["r2", "r1/z1"]),
    ),
    "from": st.sampled_from(["r1/*", "r1", "r1/z1/*"]),
    "locality": st.sampled_from(["r1/z1", "r1/z1/s1", "", "a/b/c/d"]),
    "failoverPriority": st.lists(
        st.sampled_from(["topology.kubernetes.io/region", "app"]), max_size=2
    ),
    **dict.fromkeys(
        ["allowOrigin", "allowMethods", "allowHeaders", "exposeHeaders", "subjectAltNames"],
        _STRINGS,
    ),
    "cipherSuites": st.lists(st.sampled_from(["ECDHE-RSA-AES128-GCM-SHA256", "NOPE"]), max_size=2),
    "credentialNames": st.lists(st.sampled_from(["gw-cert", "other"]), max_size=2),
    "bind": st.sampled_from(["0.0.0.0", "127.0.0.1", "10.0.0.1", "unix:///x", "x"]),
    "defaultEndpoint": st.sampled_from(["127.0.0.1:8080", "0.0.0.0:80", "unix:///s", "x:y"]),
}


# Where a name means something else in one message.
_BY_MSG_FIELD: dict[tuple[str, str], SA] = {
    ("IstioEgressListener", "hosts"): st.lists(
        st.sampled_from(["./*", "*/*", "default/reviews.default.svc.cluster.local", "~/*", "x"]),
        min_size=1,
        max_size=2,
    ),
    ("OutboundTrafficPolicy", "mode"): st.sampled_from(["ALLOW_ANY", "REGISTRY_ONLY"]),
    ("ClientTLSSettings", "mode"): st.sampled_from(["DISABLE", "SIMPLE", "ISTIO_MUTUAL"]),
    ("ServerTLSSettings", "mode"): st.sampled_from(
        ["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL"]
    ),
    ("ServerTLSSettings", "credentialName"): st.sampled_from(["gw-cert", "missing"]),
}


def scalar(msg: Msg, field: str) -> SA:
    """Values for a scalar (or scalar list / map) field, picked by its name."""
    valid = _BY_MSG_FIELD.get((msg.name, field))
    if valid is None:
        valid = _BY_NAME.get(field, _NAME)
    return _mixed(valid)


def message(msg: Msg, depth: int = 0, target: Target = ()) -> SA:
    """A dict for `msg`: its usual fields and a few others, each from the schema, and the
    field `target` leads to (a path of field names; "*" for a map key)."""
    usual = [f for f in USUALLY.get(msg.name, ()) if f in msg.fields]
    exclusive = ONE_OF.get(msg.name, ())
    others = sorted(set(msg.fields) - set(usual) - set(exclusive))
    # Fewer optional fields deeper down: objects stay small, most messages still appear.
    most = max(1, 3 - depth)
    forced = target[0] if target else None

    def build(picked: tuple[list[str], list[str]]) -> SA:
        kept, extra = picked
        names = [*kept, *extra]
        if forced is not None and forced not in names:
            if forced in exclusive:
                names = [n for n in names if n not in exclusive]
            names.append(forced)
        return st.fixed_dictionaries(
            {name: field(msg, name, depth, target[1:] if name == forced else ()) for name in names}
        )

    # The usual fields are all there in most examples (dropping one tests "is required").
    kept = (
        _rarely(
            st.just(usual),
            st.sampled_from(usual).map(lambda gone: [n for n in usual if n != gone]),
        )
        if usual
        else st.just([])
    )
    extra = st.lists(st.sampled_from(others), unique=True, max_size=most) if others else st.just([])
    if exclusive:
        # One of them, now and then two (or none) to check that is refused.
        one = _rarely(
            st.sampled_from(exclusive).map(lambda name: [name]),
            st.lists(st.sampled_from(exclusive), unique=True, max_size=2),
        )
        extra = st.tuples(one, extra).map(lambda pair: pair[0] + pair[1])
    return st.tuples(kept, extra).flatmap(build)


def field(msg: Msg, name: str, depth: int, target: Target = ()) -> SA:
    holds = msg.fields[name]
    if holds is None:
        # The end of a target path: a value picked to break the validator or Envoy.
        return hostile(name) if target == (BAD,) else scalar(msg, name)
    if isinstance(holds, MapOf):
        inner = message(holds.value, depth + 1, target[1:])  # past the "*" of the map key
        valid = st.dictionaries(_HEADER_NAME, inner, min_size=1 if target else 0, max_size=2)
        return valid if target else _weighted(valid, st.sampled_from(WRONG_SHAPES), 40)
    inner = message(holds, depth + 1, target)
    shape = st.lists(inner, min_size=1, max_size=2) if (msg.name, name) in REPEATED else inner
    return shape if target else _weighted(shape, st.sampled_from(WRONG_SHAPES), 40)


# What replaces one field's value in the hostile half of the examples, by field name.
_DURATION_FIELDS = [n for n, v in _BY_NAME.items() if v is _DURATION]
_UINT_FIELDS = [n for n, v in _BY_NAME.items() if v is _UINT]
_HOSTILE_BY_NAME: dict[str, tuple[Any, ...]] = {
    # Mostly past what a Duration holds (what made generation throw), some malformed.
    **dict.fromkeys(
        _DURATION_FIELDS,
        ("100000000000000000000h", "315576000001s", "99999999999999999999ms", "1e400s", "-1s", 0),
    ),
    **dict.fromkeys(_UINT_FIELDS, (2**32, 2**32, 2**64, 10**30, -1, 1.5, "7")),
    **dict.fromkeys(("number", "port", "targetPort"), (0, 65536, -1, 2**32, "80", 1.0)),
    **dict.fromkeys(("status", "httpStatus", "redirectCode"), (0, 99, 600, 2**32, -1, "200")),
    **dict.fromkeys(("value", "percent"), (-1, 100.5, 1e308, float("inf"), float("nan"), "5")),
    **dict.fromkeys(
        ("set", "add"),
        ({":path": "/x"}, {"host": "x"}, {"a\r\nb": "v"}, {"x-ok": "a\r\nb"}, {"x": 5}),
    ),
    "remove": ([":path"], ["host"], ["a\r\nb"], [5]),
    "regex": (*BAD_REGEXES, "x" * 100_000),
    "string": ("x" * 5000, "x" * 4097, 5),
    **dict.fromkeys(("hosts", "sniHosts"), (["a\r\nb"], ["x" * 300], ["*.*"], [], [5], "reviews")),
    "host": ("a\r\nb", "x" * 300, "*.*", "", 5, "Reviews..default"),
    "tableSize": (4, 0, 65536, 2**32, 65537),
    "minimumRingSize": (0, 2**32, 8_388_609),
    "uri": ("/a\r\nb", "x" * 10_000, "no-slash", 5),
    "authority": ("a\r\nb", "x" * 10_000, 5),
    "name": ("x" * 10_000, "a\r\nb", "ünï", "", 5),
}


def hostile(name: str) -> SA:
    """A value for field `name` chosen to break the validator or Envoy."""
    if name in _HOSTILE_BY_NAME:
        # Copied: a value is put into an object, which nothing must share with another.
        own = st.sampled_from(_HOSTILE_BY_NAME[name]).map(copy.deepcopy)
        return _weighted(own, hostile_scalar(), 4)
    return hostile_scalar()


def scalar_paths(msg: Msg) -> list[str]:
    """Every scalar field's path in `msg` ("*" for a map key)."""
    return [path for path in schema.field_paths(msg) if _holds(msg, path.split(".")) is None]


def _holds(msg: Msg, parts: list[str]) -> Any:
    holds: Any = msg
    for part in parts:
        if part == "*":
            continue
        holds = (holds.value if isinstance(holds, MapOf) else holds).fields[part]
    return holds


def istio_object(kind: str) -> SA:
    """One object of `kind` (VirtualService, DestinationRule, …) in namespace default.

    Each example aims at one scalar field of the kind's schema, picked uniformly (so every field
    is reached, not only those near the top): the object sets it, and half the time to a hostile
    value (past a uint32 or a Duration, a CRLF or pseudo-header name, a regex RE2 refuses, a body
    over 4 KiB …) with everything else plausible, so that value is the culprit."""
    spec = schema.SPECS[kind]
    paths = scalar_paths(spec)
    # Fields with hostile values of their own (numbers, durations, headers …) twice as often.
    known = [p for p in paths if p.rpartition(".")[2] in _HOSTILE_BY_NAME] or paths
    path = _weighted(st.sampled_from(known), st.sampled_from(paths), 3)
    bad = st.integers(0, 2).map(bool)  # hostile two times in three
    targets = st.tuples(path, bad).map(
        lambda pick: (*pick[0].split("."), *((BAD,) if pick[1] else ()))
    )
    return targets.flatmap(lambda target: message(spec, 0, target)).map(
        lambda body: {
            "apiVersion": f"{KIND_GROUPS[kind]}/v1",
            "kind": kind,
            "metadata": {"name": "fuzz", "namespace": "default"},
            "spec": body,
        }
    )


KINDS = tuple(schema.SPECS)
KIND_GROUPS = {name: kinds.KINDS[name].group for name in KINDS}
