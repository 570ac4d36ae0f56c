"""Field names of the Istio networking kinds, checked before parsing.

Istio's CRDs carry structural schemas, so `kubectl apply` of a VirtualService with `retris:` fails
with "unknown field". istiolite reads the same YAML from files too, where nothing would catch the
typo and the setting would silently do nothing. This module knows every field of Istio's API for
the kinds istiolite reads (also those it does not translate, so valid Istio YAML is never refused)
and rejects any other name with the exact path and, when a known name is close, a suggestion.

Only names are checked here; the kind's parser checks types and values. The tree below is written
per message type and reused wherever Istio reuses the message. JSON (lowerCamelCase) names, as
the CRDs and `kubectl` use them. All served versions (v1, v1beta1, v1alpha3) share one schema.

The schema is also the one list of the fields istiolite accepts but does not translate: such a
field is wrapped in `later(...)` (not applied yet) or `ignored(...)` (not applied on purpose), and
`unapplied_fields` names each one an object sets, so valid YAML that does nothing draws a
warning instead of silence. Settings that are unapplied only for some values or combinations
(DestinationRule `tls.mode: ISTIO_MUTUAL`, a Gateway server's mode, Sidecar egress sockets …)
are reported by their kind's model (`DestinationRule.unapplied()` and the like).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from istiolite.model.validation import ValidationError


class Msg:
    """A message type: its field names, each with what its value holds (see Field). A field
    declared `later(...)` or `ignored(...)` holds what the marker wraps; the marker itself is
    kept apart in `unapplied`, by field name."""

    __slots__ = ("fields", "name", "unapplied")

    def __init__(self, name: str, /, **fields: Field | Unapplied) -> None:
        self.name = name
        self.fields: Mapping[str, Field] = {
            key: field.holds if isinstance(field, Unapplied) else field
            for key, field in fields.items()
        }
        self.unapplied: Mapping[str, Unapplied] = {
            key: field for key, field in fields.items() if isinstance(field, Unapplied)
        }

    def __repr__(self) -> str:
        return f"Msg({self.name})"


@dataclass(frozen=True, slots=True)
class MapOf:
    """A map whose keys the user picks (header names, …) and whose values are messages."""

    value: Msg


@dataclass(frozen=True, slots=True)
class Unapplied:
    """A valid field istiolite accepts but does not translate: set (to anything but an `inert`
    value, one that means what istiolite does anyway), it draws `message` as a warning. What it
    holds is name-checked as any other field's."""

    holds: Field
    message: str
    inert: tuple[Any, ...] = ()


# What a field holds: S (a scalar, a list of scalars or a user-keyed map of scalars — nothing
# below it is checked), a Msg (a message, or a list of messages: each item is checked) or MapOf.
Field: TypeAlias = "Msg | MapOf | None"
S = None

NOT_APPLIED_YET = "accepted but not applied yet"


def later(holds: Field = S, *, note: str = "", inert: tuple[Any, ...] = ()) -> Unapplied:
    """A field istiolite does not translate yet; `note` says what happens instead."""
    return Unapplied(holds, f"{NOT_APPLIED_YET}: {note}" if note else NOT_APPLIED_YET, inert)


def ignored(why: str, holds: Field = S) -> Unapplied:
    """A field istiolite leaves alone on purpose (Istio ignores it too, …)."""
    return Unapplied(holds, f"ignored by istiolite: {why}")


# --- shared messages -------------------------------------------------------------------------

PORT_SELECTOR = Msg("PortSelector", number=S)
PERCENT = Msg("Percent", value=S)
DESTINATION = Msg("Destination", host=S, subset=S, port=PORT_SELECTOR)
STRING_MATCH = Msg("StringMatch", exact=S, prefix=S, regex=S)
HEADER_OPERATIONS = Msg("HeaderOperations", set=S, add=S, remove=S)
HEADERS = Msg("Headers", request=HEADER_OPERATIONS, response=HEADER_OPERATIONS)
# networking's WorkloadSelector (Sidecar, ServiceEntry) ...
WORKLOAD_SELECTOR = Msg("WorkloadSelector", labels=S)
# ... and istio.type.v1beta1.WorkloadSelector (DestinationRule).
TYPE_WORKLOAD_SELECTOR = Msg("type.v1beta1.WorkloadSelector", matchLabels=S)
# Gateway Port, ServiceEntry ServicePort and Sidecar SidecarPort have the same fields.
PORT = Msg("Port", number=S, protocol=S, name=S, targetPort=S)
GATEWAY_PORT = Msg(
    "Port",
    number=S,
    protocol=S,
    name=S,
    targetPort=ignored("it applies to ServiceEntry ports only (Istio ignores it here too)"),
)

SERVER_TLS = Msg(
    "ServerTLSSettings",
    httpsRedirect=S,
    mode=S,
    serverCertificate=S,
    privateKey=S,
    caCertificates=S,
    caCrl=later(),
    credentialName=S,
    credentialNames=S,
    tlsCertificates=Msg("TLSCertificate", serverCertificate=S, privateKey=S, caCertificates=S),
    subjectAltNames=S,
    verifyCertificateSpki=later(),
    verifyCertificateHash=later(),
    minProtocolVersion=S,
    maxProtocolVersion=S,
    cipherSuites=S,
    caCertCredentialName=later(),
    ecdhCurves=later(),
    insecureSkipVerify=later(),
)

CONNECTION_POOL = Msg(
    "ConnectionPoolSettings",
    tcp=Msg(
        "TCPSettings",
        maxConnections=S,
        connectTimeout=S,
        tcpKeepalive=Msg("TcpKeepalive", probes=S, time=S, interval=S),
        maxConnectionDuration=S,
        idleTimeout=later(),
    ),
    http=Msg(
        "HTTPSettings",
        http1MaxPendingRequests=S,
        http2MaxRequests=S,
        maxRequestsPerConnection=S,
        maxRetries=S,
        idleTimeout=S,
        h2UpgradePolicy=S,
        useClientProtocol=S,
        maxConcurrentStreams=later(),
        http2KeepAlive=later(Msg("HTTP2KeepAlive", interval=S, timeout=S)),
    ),
)

WORKLOAD_ENTRY = Msg(
    "WorkloadEntry",
    address=S,
    ports=S,  # port name -> number
    labels=S,
    network=later(note="endpoints are reached directly, as on one network"),
    locality=S,
    weight=S,
    serviceAccount=S,  # carried on the endpoint: its identity (registryz; mesh mTLS later)
)

# --- VirtualService --------------------------------------------------------------------------

# tcp[] and tls[] matches select by port (and SNI) only.
_L4_ANY_SOURCE = "the match applies to every client"
_L4_ANY_DESTINATION = "the match applies to every destination address"

_ROUTE_DESTINATION = Msg("RouteDestination", destination=DESTINATION, weight=S)

HTTP_ROUTE = Msg(
    "HTTPRoute",
    name=S,
    match=Msg(
        "HTTPMatchRequest",
        name=S,
        uri=STRING_MATCH,
        scheme=STRING_MATCH,
        method=STRING_MATCH,
        authority=STRING_MATCH,
        headers=MapOf(STRING_MATCH),
        port=S,
        sourceLabels=S,
        gateways=S,
        queryParams=MapOf(STRING_MATCH),
        ignoreUriCase=S,
        withoutHeaders=MapOf(STRING_MATCH),
        sourceNamespace=S,
        statPrefix=later(),
    ),
    route=Msg("HTTPRouteDestination", destination=DESTINATION, weight=S, headers=HEADERS),
    redirect=Msg(
        "HTTPRedirect",
        uri=S,
        authority=S,
        port=S,
        derivePort=later(note="the redirect keeps the request's port unless port is set"),
        prefixRewrite=later(),
        scheme=S,
        redirectCode=S,
    ),
    directResponse=Msg(
        "HTTPDirectResponse",
        status=S,
        body=Msg("HTTPBody", string=S, bytes=later(note="the response has no body")),
    ),
    delegate=Msg("Delegate", name=S, namespace=S),
    rewrite=Msg(
        "HTTPRewrite",
        uri=S,
        authority=S,
        uriRegexRewrite=Msg("RegexRewrite", match=S, rewrite=S),
    ),
    timeout=S,
    retries=Msg(
        "HTTPRetry",
        attempts=S,
        perTryTimeout=S,
        retryOn=S,
        retryRemoteLocalities=later(inert=(False,)),
        # istiolite's retries always skip the hosts already tried, Istio's default.
        retryIgnorePreviousHosts=later(inert=(True,), note="retries go to other hosts"),
        backoff=S,
    ),
    fault=Msg(
        "HTTPFaultInjection",
        delay=Msg(
            "Delay",
            fixedDelay=S,
            exponentialDelay=ignored("Istio does not implement it either"),
            percent=S,
            percentage=PERCENT,
        ),
        abort=Msg(
            "Abort",
            httpStatus=S,
            grpcStatus=later(),
            http2Error=later(),
            percentage=PERCENT,
        ),
    ),
    mirror=DESTINATION,
    mirrors=Msg("HTTPMirrorPolicy", destination=DESTINATION, percentage=PERCENT),
    mirrorPercent=later(note="use mirrorPercentage"),
    # the deprecated field's declared JSON name; the CRD accepts both spellings
    mirror_percent=later(note="use mirrorPercentage"),
    mirrorPercentage=PERCENT,
    corsPolicy=Msg(
        "CorsPolicy",
        allowOrigin=S,
        allowOrigins=STRING_MATCH,
        allowMethods=S,
        allowHeaders=S,
        exposeHeaders=S,
        maxAge=S,
        allowCredentials=S,
        unmatchedPreflights=later(),
    ),
    headers=HEADERS,
)

VIRTUAL_SERVICE = Msg(
    "VirtualService",
    hosts=S,
    gateways=S,
    http=HTTP_ROUTE,
    tls=Msg(
        "TLSRoute",
        match=Msg(
            "TLSMatchAttributes",
            sniHosts=S,
            destinationSubnets=later(note=_L4_ANY_DESTINATION),
            port=S,
            sourceLabels=later(note=_L4_ANY_SOURCE),
            gateways=S,
            sourceNamespace=later(note=_L4_ANY_SOURCE),
        ),
        route=_ROUTE_DESTINATION,
    ),
    tcp=Msg(
        "TCPRoute",
        match=Msg(
            "L4MatchAttributes",
            destinationSubnets=later(note=_L4_ANY_DESTINATION),
            port=S,
            sourceSubnet=later(note=_L4_ANY_SOURCE),
            sourceLabels=later(note=_L4_ANY_SOURCE),
            gateways=S,
            sourceNamespace=later(note=_L4_ANY_SOURCE),
        ),
        route=_ROUTE_DESTINATION,
    ),
    exportTo=S,
)

# --- DestinationRule -------------------------------------------------------------------------

_LOCALITY_ROUTE = Msg("LocalityLoadBalancerSetting.Failover", **{"from": S, "to": S})

LOAD_BALANCER = Msg(
    "LoadBalancerSettings",
    simple=S,
    consistentHash=Msg(
        "ConsistentHashLB",
        httpHeaderName=S,
        httpCookie=Msg(
            "HTTPCookie",
            name=S,
            path=S,
            ttl=S,
            attributes=later(Msg("HTTPCookie.Attribute", name=S, value=S)),
        ),
        useSourceIp=S,
        httpQueryParameterName=S,
        ringHash=Msg("RingHash", minimumRingSize=S),
        maglev=Msg("MagLev", tableSize=S),
        minimumRingSize=S,
    ),
    localityLbSetting=Msg(
        "LocalityLoadBalancerSetting",
        # distribute[].to maps locality -> weight (user keys, scalar values)
        distribute=Msg("LocalityLoadBalancerSetting.Distribute", **{"from": S, "to": S}),
        failover=_LOCALITY_ROUTE,
        failoverPriority=S,
        enabled=S,
    ),
    warmupDurationSecs=later(),
    warmup=later(Msg("WarmupConfiguration", duration=S, minimumPercent=S, aggression=S)),
    backendUtilization=later(
        Msg(
            "LoadBalancerSettings.BackendUtilizationLoadBalancing",
            errorUtilizationPenaltyPercent=S,
            metricNamesForComputingUtilization=S,
            weightExpirationPeriod=S,
            weightStabilizationPeriod=S,
            weightUpdatePeriod=S,
        )
    ),
    zoneAwareLbSetting=later(
        Msg(
            "ZoneAwareLoadBalancerSetting",
            enabled=S,
            failover=_LOCALITY_ROUTE,
            failoverPriority=S,
            minClusterSize=S,
        )
    ),
)

OUTLIER_DETECTION = Msg(
    "OutlierDetection",
    consecutiveErrors=later(note="use consecutiveGatewayErrors or consecutive5xxErrors"),
    splitExternalLocalOriginErrors=later(inert=(False,)),
    consecutiveLocalOriginFailures=later(),
    consecutiveGatewayErrors=S,
    consecutive5xxErrors=S,
    interval=S,
    baseEjectionTime=S,
    maxEjectionPercent=S,
    minHealthPercent=S,
    outlierDetectionHttpErrorCodes=later(),
)

CLIENT_TLS = Msg(
    "ClientTLSSettings",
    mode=S,
    clientCertificate=S,
    privateKey=S,
    caCertificates=S,
    credentialName=S,
    subjectAltNames=S,
    sni=S,
    insecureSkipVerify=S,
    caCrl=S,
)

TRAFFIC_POLICY = Msg(
    "TrafficPolicy",
    loadBalancer=LOAD_BALANCER,
    connectionPool=CONNECTION_POOL,
    outlierDetection=OUTLIER_DETECTION,
    tls=CLIENT_TLS,
    portLevelSettings=Msg(
        "TrafficPolicy.PortTrafficPolicy",
        port=PORT_SELECTOR,
        loadBalancer=LOAD_BALANCER,
        connectionPool=CONNECTION_POOL,
        outlierDetection=OUTLIER_DETECTION,
        tls=CLIENT_TLS,
    ),
    tunnel=later(Msg("TrafficPolicy.TunnelSettings", protocol=S, targetHost=S, targetPort=S)),
    proxyProtocol=later(Msg("TrafficPolicy.ProxyProtocol", version=S)),
    retryBudget=later(
        Msg("TrafficPolicy.RetryBudget", percent=S, minRetryConcurrency=S, budgetInterval=S)
    ),
)

DESTINATION_RULE = Msg(
    "DestinationRule",
    host=S,
    trafficPolicy=TRAFFIC_POLICY,
    subsets=Msg("Subset", name=S, labels=S, trafficPolicy=TRAFFIC_POLICY),
    exportTo=S,
    workloadSelector=TYPE_WORKLOAD_SELECTOR,
)

# --- Gateway, ServiceEntry, Sidecar, WorkloadEntry -------------------------------------------

GATEWAY = Msg(
    "Gateway",
    servers=Msg(
        "Server",
        port=GATEWAY_PORT,
        bind=S,
        hosts=S,
        tls=SERVER_TLS,
        defaultEndpoint=ignored("Istio does not implement it for Gateway servers either"),
        name=S,
    ),
    selector=S,
)

SERVICE_ENTRY = Msg(
    "ServiceEntry",
    hosts=S,
    addresses=S,
    ports=PORT,
    location=S,
    resolution=S,
    endpoints=WORKLOAD_ENTRY,
    workloadSelector=WORKLOAD_SELECTOR,
    exportTo=S,
    subjectAltNames=S,
)

SIDECAR = Msg(
    "Sidecar",
    workloadSelector=WORKLOAD_SELECTOR,
    ingress=Msg(
        "IstioIngressListener",
        port=PORT,
        bind=S,
        captureMode=S,
        defaultEndpoint=S,
        tls=SERVER_TLS,
        connectionPool=CONNECTION_POOL,
    ),
    egress=Msg("IstioEgressListener", port=PORT, bind=S, captureMode=S, hosts=S),
    inboundConnectionPool=CONNECTION_POOL,
    outboundTrafficPolicy=Msg("OutboundTrafficPolicy", mode=S, egressProxy=DESTINATION),
)

# --- security.istio.io: PeerAuthentication --------------------------------------------------

_PEER_MTLS = Msg("PeerAuthentication.MutualTLS", mode=S)
PEER_AUTHENTICATION = Msg(
    "PeerAuthentication",
    selector=TYPE_WORKLOAD_SELECTOR,
    mtls=_PEER_MTLS,
    portLevelMtls=MapOf(_PEER_MTLS),
)

# --- AuthorizationPolicy (security.istio.io) ------------------------------------------------

_POLICY_TARGET_REF = Msg("PolicyTargetReference", group=S, kind=S, name=S, namespace=S)
AUTHORIZATION_POLICY = Msg(
    "AuthorizationPolicy",
    selector=TYPE_WORKLOAD_SELECTOR,
    targetRef=_POLICY_TARGET_REF,
    targetRefs=_POLICY_TARGET_REF,
    action=S,
    provider=Msg("ExtensionProvider", name=S),
    rules=Msg(
        "Rule",
        **{
            "from": Msg(
                "Rule.From",
                source=Msg(
                    "Source",
                    principals=S,
                    notPrincipals=S,
                    requestPrincipals=S,
                    notRequestPrincipals=S,
                    namespaces=S,
                    notNamespaces=S,
                    serviceAccounts=S,
                    notServiceAccounts=S,
                    trustDomains=S,
                    notTrustDomains=S,
                    ipBlocks=S,
                    notIpBlocks=S,
                    remoteIpBlocks=S,
                    notRemoteIpBlocks=S,
                ),
            ),
            "to": Msg(
                "Rule.To",
                operation=Msg(
                    "Operation",
                    hosts=S,
                    notHosts=S,
                    ports=S,
                    notPorts=S,
                    methods=S,
                    notMethods=S,
                    paths=S,
                    notPaths=S,
                ),
            ),
            "when": Msg("Condition", key=S, values=S, notValues=S),
        },
    ),
)

# --- security.istio.io RequestAuthentication ---------------------------------------------------

# istio.type.v1beta1.PolicyTargetReference
POLICY_TARGET_REFERENCE = Msg("PolicyTargetReference", group=S, kind=S, name=S, namespace=S)

REQUEST_AUTHENTICATION = Msg(
    "RequestAuthentication",
    selector=TYPE_WORKLOAD_SELECTOR,
    targetRef=POLICY_TARGET_REFERENCE,
    targetRefs=POLICY_TARGET_REFERENCE,
    jwtRules=Msg(
        "JWTRule",
        issuer=S,
        audiences=S,
        jwksUri=S,
        jwks_uri=S,  # the field's declared JSON name; the CRD accepts both spellings
        jwks=S,
        fromHeaders=Msg("JWTHeader", name=S, prefix=S),
        fromParams=S,
        fromCookies=S,
        outputPayloadToHeader=S,
        outputClaimToHeaders=Msg("ClaimToHeader", header=S, claim=S),
        forwardOriginalToken=S,
        timeout=S,
        spaceDelimitedClaims=S,
        presence=ignored("istiod does not apply it either (a missing token passes)"),
    ),
)

# --- the objects -----------------------------------------------------------------------------

# ObjectMeta: only its own keys are checked (managedFields, ownerReferences … are not descended).
OBJECT_META = Msg(
    "ObjectMeta",
    name=S,
    namespace=S,
    labels=S,
    annotations=S,
    uid=S,
    resourceVersion=S,
    generation=S,
    creationTimestamp=S,
    managedFields=S,
    ownerReferences=S,
    finalizers=S,
    generateName=S,
    deletionTimestamp=S,
    deletionGracePeriodSeconds=S,
    selfLink=S,
)

SPECS: dict[str, Msg] = {
    "VirtualService": VIRTUAL_SERVICE,
    "DestinationRule": DESTINATION_RULE,
    "Gateway": GATEWAY,
    "ServiceEntry": SERVICE_ENTRY,
    "Sidecar": SIDECAR,
    "WorkloadEntry": WORKLOAD_ENTRY,
    "PeerAuthentication": PEER_AUTHENTICATION,
    "AuthorizationPolicy": AUTHORIZATION_POLICY,
    "RequestAuthentication": REQUEST_AUTHENTICATION,
}

# status is written by Istio's controllers (conditions, validationMessages …): allowed, unchecked.
OBJECTS: dict[str, Msg] = {
    kind: Msg(kind, apiVersion=S, kind=S, metadata=OBJECT_META, spec=spec, status=S)
    for kind, spec in SPECS.items()
}


def check_fields(raw: dict[str, Any]) -> None:
    """Raise ValidationError for the first field (in document order) the kind's schema lacks.

    A no-op for kinds without a schema here (Kubernetes core kinds, unknown kinds)."""
    kind = raw.get("kind")
    schema = OBJECTS.get(kind) if isinstance(kind, str) else None
    if schema is not None:
        _check(raw, schema, "")


def _check(obj: dict[Any, Any], msg: Msg, path: str) -> None:
    for key, value in obj.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in msg.fields:
            raise ValidationError(where, _unknown(key, msg))
        field = msg.fields[key]
        if field is None or value is None:
            continue
        if isinstance(field, MapOf):
            if isinstance(value, dict):
                for name, item in value.items():
                    if isinstance(item, dict):
                        _check(item, field.value, f"{where}.{name}")
        elif isinstance(value, dict):
            _check(value, field, where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    _check(item, field, f"{where}[{i}]")
        # any other shape is the parser's to reject, with its own message


def unapplied_fields(raw: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(field path, message) for each field the object sets that istiolite accepts but does not
    translate (marked `later` or `ignored` above), in document order. A field counts as set
    unless it is null, empty or one of its inert values; what lies below it is not listed
    again. Nothing for kinds without a schema; names are assumed checked (`check_fields`)."""
    kind = raw.get("kind")
    schema = OBJECTS.get(kind) if isinstance(kind, str) else None
    out: list[tuple[str, str]] = []
    if schema is not None:
        _collect(raw, schema, "", out)
    return tuple(out)


def _collect(obj: dict[Any, Any], msg: Msg, path: str, out: list[tuple[str, str]]) -> None:
    for key, value in obj.items():
        if value is None or key not in msg.fields:
            continue
        where = f"{path}.{key}" if path else str(key)
        marker = msg.unapplied.get(key)
        field = msg.fields[key]
        if marker is not None:
            empty = isinstance(value, str | list | dict) and not value
            if not empty and value not in marker.inert:
                out.append((where, marker.message))
        elif field is None:
            continue
        elif isinstance(field, MapOf):
            if isinstance(value, dict):
                for name, item in value.items():
                    if isinstance(item, dict):
                        _collect(item, field.value, f"{where}.{name}", out)
        elif isinstance(value, dict):
            _collect(value, field, where, out)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    _collect(item, field, f"{where}[{i}]", out)


def _norm(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _unknown(key: Any, msg: Msg) -> str:
    text = f'unknown field "{key}"'
    hint = suggest(str(key), msg.fields)
    if hint:
        return f'{text}; did you mean "{hint}"?'
    if len(msg.fields) <= 8:
        return f"{text} (known: {', '.join(sorted(msg.fields))})"
    return text


def suggest(name: str, known: Mapping[str, Any] | set[str]) -> str | None:
    """The known name closest to `name` (same letters ignoring case and _ or -, else difflib)."""
    by_norm = {_norm(k): k for k in known}
    if _norm(name) in by_norm:
        return by_norm[_norm(name)]
    close = difflib.get_close_matches(_norm(name), list(by_norm), n=1, cutoff=0.6)
    return by_norm[close[0]] if close else None


def field_paths(msg: Msg, prefix: str = "") -> list[str]:
    """Every field path the schema allows under `msg` (messages expanded where reused)."""
    out: list[str] = []
    for name, field in msg.fields.items():
        path = f"{prefix}.{name}" if prefix else name
        out.append(path)
        if isinstance(field, MapOf):
            out.extend(field_paths(field.value, f"{path}.*"))
        elif field is not None:
            out.extend(field_paths(field, path))
    return out
