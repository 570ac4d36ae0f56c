"""Valid Istio fields istiolite accepts but does not translate are warned about, naming the object
and the exact field path: marked once in the schema (`later` / `ignored`), found by
`unapplied_fields` when an object is parsed, kept on its `ObjectMeta` and reported by
`PushContext.reference_warnings` (hence by `istiolite validate`, `/debug/configz` and the server
log). A fully translated object warns about nothing."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from istiolite.model.kinds import parse_object
from istiolite.model.schema import SPECS, MapOf, Msg, unapplied_fields
from istiolite.networking.gateway import bound_servers
from istiolite.push.context import ConfigWarning, PushContext
from istiolite.sources.yaml_documents import read_objects

NOT_YET = "accepted but not applied yet"
IGNORED = "ignored by istiolite: "

# --- fully translated objects: every field set here has its effect ---------------------------

BASES: dict[str, str] = {
    "VirtualService": """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.example.com]
  gateways: [mesh]
  exportTo: ["*"]
  http:
  - name: main
    match:
    - name: api
      uri: {prefix: /api}
      headers: {x-user: {exact: a}}
      sourceLabels: {app: web}
      gateways: [mesh]
      port: 80
    route:
    - destination: {host: reviews, subset: v1, port: {number: 80}}
      weight: 100
      headers: {request: {set: {x-a: b}}}
    timeout: 2s
    retries: {attempts: 2, perTryTimeout: 1s, retryOn: "5xx,503"}
    fault:
      delay: {fixedDelay: 1s, percentage: {value: 1}}
      abort: {httpStatus: 503, percentage: {value: 1}}
    mirror: {host: shadow}
    mirrorPercentage: {value: 5}
    corsPolicy: {allowOrigins: [{exact: "https://a.example.com"}], allowMethods: [GET]}
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, port: 8080, redirectCode: 302}
  - match: [{uri: {exact: /ok}}]
    directResponse: {status: 200, body: {string: ok}}
  tcp:
  - match: [{port: 27017}]
    route: [{destination: {host: mongo}}]
  tls:
  - match: [{sniHosts: [reviews.example.com], port: 443}]
    route: [{destination: {host: reviews}}]
""",
    "DestinationRule": """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  exportTo: ["*"]
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: session, path: /, ttl: 0s}}
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 1s}
      http: {http2MaxRequests: 100, idleTimeout: 30s}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s}
    tls: {mode: SIMPLE, sni: reviews.example.com}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: RANDOM}
      connectionPool: {tcp: {maxConnections: 5}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
""",
    "Gateway": """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - name: http
    port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: MUTUAL, credentialName: web-cert, subjectAltNames: [client.example.com],
          minProtocolVersion: TLSV1_2}
""",
    "ServiceEntry": """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: shop}
spec:
  hosts: [api.partner.example.com]
  addresses: [240.240.0.10]
  ports: [{number: 443, name: tls, protocol: TLS, targetPort: 8443}]
  location: MESH_EXTERNAL
  resolution: STATIC
  exportTo: ["."]
  endpoints:
  - {address: 203.0.113.10, ports: {tls: 9443}, labels: {a: b}, locality: eu/z1, weight: 2}
""",
    "WorkloadEntry": """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: shop}
spec:
  address: 10.128.0.7
  ports: {http: 8080}
  labels: {app: legacy}
  locality: us-central1/us-central1-a
  weight: 2
""",
    "Sidecar": """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: shop}
spec:
  workloadSelector: {labels: {app: reviews}}
  inboundConnectionPool: {http: {http1MaxPendingRequests: 100}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
    connectionPool: {tcp: {maxConnections: 10}}
  - port: {number: 9443, protocol: HTTPS, name: https}
    tls: {mode: SIMPLE, serverCertificate: /etc/c.pem, privateKey: /etc/k.pem}
  egress:
  - hosts: ["./*", istio-system/*]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""",
    "RequestAuthentication": """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: https://issuer.example.com
    jwksUri: https://issuer.example.com/keys
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    outputPayloadToHeader: x-payload
""",
}

# (kind, field path, a valid value, expected message): each unapplied field, set alone on the
# kind's fully translated object.
CASES: list[tuple[str, str, Any, str]] = [
    ("VirtualService", "spec.http[0].match[0].statPrefix", "api", NOT_YET),
    ("VirtualService", "spec.http[0].retries.retryRemoteLocalities", True, NOT_YET),
    (
        "VirtualService",
        "spec.http[0].retries.retryIgnorePreviousHosts",
        False,
        f"{NOT_YET}: retries go to other hosts",
    ),
    ("VirtualService", "spec.http[0].fault.delay.exponentialDelay", "1s", IGNORED),
    ("VirtualService", "spec.http[0].fault.abort.grpcStatus", "UNAVAILABLE", NOT_YET),
    ("VirtualService", "spec.http[0].fault.abort.http2Error", "REFUSED_STREAM", NOT_YET),
    ("VirtualService", "spec.http[0].mirrorPercent", 5, f"{NOT_YET}: use mirrorPercentage"),
    ("VirtualService", "spec.http[0].mirror_percent", 5, f"{NOT_YET}: use mirrorPercentage"),
    ("VirtualService", "spec.http[0].corsPolicy.unmatchedPreflights", "IGNORE", NOT_YET),
    ("VirtualService", "spec.http[1].redirect.derivePort", "FROM_REQUEST_PORT", NOT_YET),
    ("VirtualService", "spec.http[1].redirect.prefixRewrite", "/new", NOT_YET),
    ("VirtualService", "spec.http[2].directResponse.body.bytes", "b2s=", NOT_YET),
    ("VirtualService", "spec.tcp[0].match[0].destinationSubnets", ["10.0.0.0/8"], NOT_YET),
    ("VirtualService", "spec.tcp[0].match[0].sourceSubnet", "10.1.0.0/16", NOT_YET),
    ("VirtualService", "spec.tcp[0].match[0].sourceLabels", {"app": "worker"}, NOT_YET),
    ("VirtualService", "spec.tcp[0].match[0].sourceNamespace", "shop", NOT_YET),
    ("VirtualService", "spec.tls[0].match[0].destinationSubnets", ["10.0.0.0/8"], NOT_YET),
    ("VirtualService", "spec.tls[0].match[0].sourceLabels", {"app": "edge"}, NOT_YET),
    ("VirtualService", "spec.tls[0].match[0].sourceNamespace", "shop", NOT_YET),
    (
        "DestinationRule",
        "spec.trafficPolicy.tunnel",
        {"protocol": "CONNECT", "targetHost": "reviews.example.com", "targetPort": 443},
        NOT_YET,
    ),
    ("DestinationRule", "spec.trafficPolicy.proxyProtocol", {"version": "V2"}, NOT_YET),
    ("DestinationRule", "spec.trafficPolicy.retryBudget", {"percent": 20.0}, NOT_YET),
    (
        "DestinationRule",
        "spec.subsets[0].trafficPolicy.loadBalancer.warmupDurationSecs",
        "30s",
        NOT_YET,
    ),
    (
        "DestinationRule",
        "spec.subsets[0].trafficPolicy.loadBalancer.warmup",
        {"duration": "60s", "minimumPercent": 10, "aggression": 1.5},
        NOT_YET,
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes",
        [{"name": "SameSite", "value": "Strict"}],
        NOT_YET,
    ),
    ("DestinationRule", "spec.trafficPolicy.connectionPool.tcp.idleTimeout", "30m", NOT_YET),
    (
        "DestinationRule",
        "spec.trafficPolicy.portLevelSettings[0].connectionPool.tcp.idleTimeout",
        "1m",
        NOT_YET,
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams",
        128,
        NOT_YET,
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.connectionPool.http.http2KeepAlive",
        {"interval": "15s", "timeout": "5s"},
        NOT_YET,
    ),
    ("DestinationRule", "spec.trafficPolicy.outlierDetection.consecutiveErrors", 5, NOT_YET),
    (
        "DestinationRule",
        "spec.trafficPolicy.outlierDetection.splitExternalLocalOriginErrors",
        True,
        NOT_YET,
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
        3,
        NOT_YET,
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes",
        [503],
        NOT_YET,
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.loadBalancer.backendUtilization",
        {"weightUpdatePeriod": "1s"},
        NOT_YET,
    ),
    (
        "DestinationRule",
        "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting",
        {"enabled": True, "minClusterSize": 3},
        NOT_YET,
    ),
    ("Gateway", "spec.servers[0].defaultEndpoint", "127.0.0.1:8080", IGNORED),
    ("Gateway", "spec.servers[0].port.targetPort", 8080, IGNORED),
    ("Gateway", "spec.servers[1].tls.caCrl", "/etc/certs/crl.pem", NOT_YET),
    ("Gateway", "spec.servers[1].tls.verifyCertificateSpki", ["2hq1aFfGmBKp5Ckg8ooi="], NOT_YET),
    ("Gateway", "spec.servers[1].tls.verifyCertificateHash", ["AB:CD:EF"], NOT_YET),
    ("Gateway", "spec.servers[1].tls.caCertCredentialName", "client-ca", NOT_YET),
    ("Gateway", "spec.servers[1].tls.ecdhCurves", ["P-256"], NOT_YET),
    ("Gateway", "spec.servers[1].tls.insecureSkipVerify", True, NOT_YET),
    ("ServiceEntry", "spec.endpoints[0].network", "external", NOT_YET),
    ("WorkloadEntry", "spec.network", "vm-net", NOT_YET),
    ("Sidecar", "spec.ingress[0].connectionPool.tcp.idleTimeout", "1m", NOT_YET),
    ("Sidecar", "spec.inboundConnectionPool.http.maxConcurrentStreams", 10, NOT_YET),
    ("Sidecar", "spec.ingress[1].tls.caCrl", "/etc/crl.pem", NOT_YET),
    ("Sidecar", "spec.ingress[1].tls.verifyCertificateHash", ["AB:CD"], NOT_YET),
    ("RequestAuthentication", "spec.jwtRules[0].presence", "REQUIRED", IGNORED),
]


def base(kind: str) -> dict[str, Any]:
    raw = yaml.safe_load(BASES[kind])
    assert isinstance(raw, dict)
    return raw


def with_field(kind: str, path: str, value: Any) -> dict[str, Any]:
    """The kind's base object with `value` set at `path`, creating mappings on the way."""
    raw = base(kind)
    steps = [int(s) if s.isdigit() else s for s in re.findall(r"[^.\[\]]+", path)]
    node: Any = raw
    for step in steps[:-1]:
        if isinstance(step, str) and step not in node:
            node[step] = {}
        node = node[step]
    node[steps[-1]] = copy.deepcopy(value)
    return raw


def unapplied(raw: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    _, obj = parse_object(raw)
    found: tuple[tuple[str, str], ...] = obj.meta.unapplied
    return found


def unapplied_warnings(ctx: PushContext) -> list[ConfigWarning]:
    return [w for w in ctx.reference_warnings() if w.unapplied]


def context(*raws: dict[str, Any]) -> PushContext:
    return PushContext(dict(parse_object(r) for r in raws), domain="cluster.local", version="t")


# --- each field, alone ------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "path", "value", "message"), CASES)
def test_each_unapplied_field_warns_with_its_exact_path(
    kind: str, path: str, value: Any, message: str
) -> None:
    [(field, text)] = unapplied(with_field(kind, path, value))
    assert field == path
    if message == IGNORED:
        assert text.startswith(IGNORED) and len(text) > len(IGNORED)
    else:
        assert text == message or text.startswith(f"{message}: ")


@pytest.mark.parametrize("kind", sorted(BASES))
def test_a_fully_translated_object_warns_about_nothing(kind: str) -> None:
    raw = base(kind)
    assert unapplied(raw) == ()
    assert unapplied_warnings(context(raw)) == []


def _marked_paths(msg: Msg, prefix: str = "") -> set[str]:
    """The schema's unapplied fields under `msg`, as paths without list indexes."""
    out: set[str] = set()
    for name, field in msg.fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in msg.unapplied:
            out.add(path)
        elif isinstance(field, MapOf):
            out |= _marked_paths(field.value, f"{path}.*")
        elif isinstance(field, Msg):
            out |= _marked_paths(field, path)
    return out


def test_every_field_the_schema_marks_has_a_case() -> None:
    """The CASES above cover the whole list: one case per marked field of every kind (messages
    Istio reuses, e.g. connectionPool or ServerTLSSettings, at one place at least)."""
    covered = {_owner(kind, re.sub(r"\[\d+\]", "", path)) for kind, path, _, _ in CASES}
    for kind, spec in SPECS.items():
        for path in _marked_paths(spec, "spec"):
            assert _owner(kind, path) in covered, (kind, path)


def _owner(kind: str, path: str) -> tuple[str, str]:
    """(message type, field) a `spec.`-path ends in: a reused message counts once."""
    msg = SPECS[kind]
    *steps, last = [s for s in path.split(".")[1:] if s != "*"]
    for step in steps:
        field = msg.fields[step]
        found = field.value if isinstance(field, MapOf) else field
        assert isinstance(found, Msg), path
        msg = found
    return msg.name, last


def test_the_list_per_kind() -> None:
    """What istiolite accepts but does not apply, per kind (the README lists the same)."""
    assert {k: sorted(_marked_paths(spec)) for k, spec in SPECS.items()} == {
        "VirtualService": [
            "http.corsPolicy.unmatchedPreflights",
            "http.directResponse.body.bytes",
            "http.fault.abort.grpcStatus",
            "http.fault.abort.http2Error",
            "http.fault.delay.exponentialDelay",
            "http.match.statPrefix",
            "http.mirrorPercent",
            "http.mirror_percent",
            "http.redirect.derivePort",
            "http.redirect.prefixRewrite",
            "http.retries.retryIgnorePreviousHosts",
            "http.retries.retryRemoteLocalities",
            "tcp.match.destinationSubnets",
            "tcp.match.sourceLabels",
            "tcp.match.sourceNamespace",
            "tcp.match.sourceSubnet",
            "tls.match.destinationSubnets",
            "tls.match.sourceLabels",
            "tls.match.sourceNamespace",
        ],
        "DestinationRule": sorted(
            [
                *(
                    f"{level}.{field}"
                    for level in (
                        "trafficPolicy",
                        "trafficPolicy.portLevelSettings",
                        "subsets.trafficPolicy",
                        "subsets.trafficPolicy.portLevelSettings",
                    )
                    for field in (
                        "loadBalancer.consistentHash.httpCookie.attributes",
                        "loadBalancer.warmup",
                        "loadBalancer.warmupDurationSecs",
                        "connectionPool.tcp.idleTimeout",
                        "connectionPool.http.maxConcurrentStreams",
                        "connectionPool.http.http2KeepAlive",
                        "outlierDetection.consecutiveErrors",
                        "outlierDetection.splitExternalLocalOriginErrors",
                        "outlierDetection.consecutiveLocalOriginFailures",
                        "outlierDetection.outlierDetectionHttpErrorCodes",
                        "loadBalancer.backendUtilization",
                        "loadBalancer.zoneAwareLbSetting",
                    )
                ),
                *(
                    f"{level}.{field}"
                    for level in ("trafficPolicy", "subsets.trafficPolicy")
                    for field in ("proxyProtocol", "retryBudget", "tunnel")
                ),
            ]
        ),
        "Gateway": [
            "servers.defaultEndpoint",
            "servers.port.targetPort",
            "servers.tls.caCertCredentialName",
            "servers.tls.caCrl",
            "servers.tls.ecdhCurves",
            "servers.tls.insecureSkipVerify",
            "servers.tls.verifyCertificateHash",
            "servers.tls.verifyCertificateSpki",
        ],
        "ServiceEntry": [
            "endpoints.network",
        ],
        "Sidecar": [
            "inboundConnectionPool.http.http2KeepAlive",
            "inboundConnectionPool.http.maxConcurrentStreams",
            "inboundConnectionPool.tcp.idleTimeout",
            "ingress.connectionPool.http.http2KeepAlive",
            "ingress.connectionPool.http.maxConcurrentStreams",
            "ingress.connectionPool.tcp.idleTimeout",
            "ingress.tls.caCertCredentialName",
            "ingress.tls.caCrl",
            "ingress.tls.ecdhCurves",
            "ingress.tls.insecureSkipVerify",
            "ingress.tls.verifyCertificateHash",
            "ingress.tls.verifyCertificateSpki",
        ],
        "WorkloadEntry": ["network"],
        "PeerAuthentication": [],
        "AuthorizationPolicy": [],
        "RequestAuthentication": ["jwtRules.presence"],
    }


# --- what counts as set ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        # What istiolite does anyway (Istio's defaults).
        ("VirtualService", "spec.http[0].retries.retryIgnorePreviousHosts", True),
        ("VirtualService", "spec.http[0].retries.retryRemoteLocalities", False),
        (
            "DestinationRule",
            "spec.trafficPolicy.outlierDetection.splitExternalLocalOriginErrors",
            False,
        ),
        ("ServiceEntry", "spec.location", "MESH_EXTERNAL"),
        # Applied since mesh mTLS (auto mTLS, the SANs it verifies).
        ("ServiceEntry", "spec.location", "MESH_INTERNAL"),
        ("ServiceEntry", "spec.subjectAltNames", ["spiffe://partner/sa/api"]),
        # Null or empty: as if not written.
        ("VirtualService", "spec.tcp[0].match[0].destinationSubnets", []),
        ("VirtualService", "spec.tls[0].match[0].sourceLabels", {}),
        ("VirtualService", "spec.http[0].retries.backoff", None),
        ("WorkloadEntry", "spec.network", ""),
    ],
)
def test_inert_values_warn_about_nothing(kind: str, path: str, value: Any) -> None:
    assert unapplied(with_field(kind, path, value)) == ()


def test_a_message_is_reported_once_not_field_by_field() -> None:
    raw = with_field(
        "DestinationRule",
        "spec.trafficPolicy.tunnel",
        {"protocol": "CONNECT", "targetHost": "x.example.com", "targetPort": 443},
    )
    assert [f for f, _ in unapplied(raw)] == ["spec.trafficPolicy.tunnel"]


def test_fields_are_listed_in_document_order() -> None:
    raw = with_field("VirtualService", "spec.http[0].retries.retryRemoteLocalities", True)
    raw["spec"]["http"][0]["match"][0]["statPrefix"] = "api"
    raw["spec"]["tcp"][0]["match"][0]["sourceSubnet"] = "10.0.0.0/8"
    assert [f for f, _ in unapplied(raw)] == [
        "spec.http[0].match[0].statPrefix",
        "spec.http[0].retries.retryRemoteLocalities",
        "spec.tcp[0].match[0].sourceSubnet",
    ]
    assert unapplied_fields(raw) == unapplied(raw)


def test_kinds_without_a_schema_have_none() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }
    assert unapplied_fields(service) == ()
    assert unapplied(service) == ()


def test_setting_an_unapplied_field_changes_the_object_but_its_value_does_not() -> None:
    """The warnings live on ObjectMeta and take part in equality: adding such a field is a
    change (the store pushes, the warnings refresh); changing only its value is not."""
    plain = parse_object(base("VirtualService"))[1]
    slow = parse_object(with_field("VirtualService", "spec.http[0].match[0].statPrefix", "a"))[1]
    slower = parse_object(with_field("VirtualService", "spec.http[0].match[0].statPrefix", "b"))[1]
    assert plain != slow
    assert slow == slower


# --- reported where the other warnings are ---------------------------------------------------


def test_reference_warnings_name_the_object_and_field() -> None:
    ctx = context(
        with_field("VirtualService", "spec.http[0].retries.retryRemoteLocalities", True),
        with_field("WorkloadEntry", "spec.network", "vm-net"),
    )
    assert unapplied_warnings(ctx) == [
        ConfigWarning(
            "VirtualService shop/reviews",
            "spec.http[0].retries.retryRemoteLocalities",
            NOT_YET,
            unapplied=True,
        ),
        ConfigWarning(
            "WorkloadEntry shop/vm-1",
            "spec.network",
            f"{NOT_YET}: endpoints are reached directly, as on one network",
            unapplied=True,
        ),
    ]


def test_rules_shadowed_for_their_host_are_reported_too() -> None:
    """Every DestinationRule may apply somewhere (exportTo), so each reports its own."""
    first = with_field("DestinationRule", "spec.trafficPolicy.retryBudget", {"percent": 5})
    second = copy.deepcopy(first)
    second["metadata"]["name"] = "reviews-2"
    second["spec"]["trafficPolicy"]["tls"] = {"mode": "ISTIO_MUTUAL"}
    objects = [(w.object, w.field) for w in unapplied_warnings(context(first, second))]
    assert objects == [
        ("DestinationRule shop/reviews", "spec.trafficPolicy.retryBudget"),
        ("DestinationRule shop/reviews-2", "spec.trafficPolicy.retryBudget"),
    ]


@pytest.mark.parametrize("mode", ["ISTIO_MUTUAL", "AUTO_PASSTHROUGH"])
def test_gateway_servers_with_mesh_tls_modes_are_served_without_a_warning(mode: str) -> None:
    raw = base("Gateway")
    raw["spec"]["servers"].append(
        {
            "port": {"number": 15443, "name": "tls-mesh", "protocol": "TLS"},
            "hosts": ["*.global"],
            "tls": {"mode": mode},
        }
    )
    ctx = context(raw)
    assert unapplied_warnings(ctx) == []
    served = bound_servers(ctx, "istio-system", {"istio": "ingressgateway"})
    assert ("0.0.0.0", 15443) in served
    assert ("0.0.0.0", 80) in served  # the other servers stay


def test_the_demo_examples_set_nothing_unapplied() -> None:
    demo = Path(__file__).resolve().parents[3] / "examples" / "demo"
    files = sorted(demo.glob("*.yaml"))
    assert files
    objects = {}
    for path in files:
        for item in read_objects(path.read_text()):
            key, obj = parse_object(item.raw)
            assert obj.meta.unapplied == (), (path.name, key)
            objects[key] = obj
    ctx = PushContext(objects, domain="cluster.local", version="demo")
    assert unapplied_warnings(ctx) == []


def test_a_fault_istiolite_cannot_apply_loads_and_warns_instead_of_failing() -> None:
    # Valid Istio: an abort by gRPC status only, a delay by exponentialDelay only. Not an error.
    raw = yaml.safe_load(
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: shop}
spec:
  hosts: [r]
  http:
  - route: [{destination: {host: r}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 10}}}
  - route: [{destination: {host: r}}]
    fault: {delay: {exponentialDelay: 1s}}
"""
    )
    _, vs = parse_object(raw)
    assert [h.fault for h in vs.http] == [None, None]
    assert [field for field, _ in unapplied(raw)] == [
        "spec.http[0].fault.abort.grpcStatus",
        "spec.http[1].fault.delay.exponentialDelay",
    ]
