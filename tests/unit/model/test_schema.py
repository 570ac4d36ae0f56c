"""Unknown field names in the Istio networking kinds are rejected with their exact path (as the
CRDs' structural schemas make `kubectl apply` do), with a hint when a known name is close; every
real Istio field, translated or not, is accepted."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from istiolite.model.kinds import KINDS, UnknownKind, parse_object
from istiolite.model.schema import OBJECTS, SPECS, MapOf, Msg, check_fields, field_paths, suggest
from istiolite.model.validation import ValidationError

# --- realistic, fully featured objects (many fields istiolite does not translate) ------------

VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
  labels: {app: reviews, team/owner: checkout}
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
  uid: 0b6f1c1e-8a0d-4c52-9d57-2f4e8b0c2f11
  resourceVersion: "18231"
  generation: 3
  creationTimestamp: "2024-05-01T10:00:00Z"
  managedFields:
  - manager: kubectl
    operation: Update
    fieldsV1: {f:spec: {f:hosts: {}}}
spec:
  hosts: [reviews.shop.svc.cluster.local, reviews.example.com]
  gateways: [mesh, istio-system/public]
  exportTo: [".", istio-system]
  http:
  - name: canary
    match:
    - name: beta-users
      uri: {prefix: /api/v2}
      scheme: {exact: https}
      method: {regex: "GET|HEAD"}
      authority: {prefix: reviews}
      headers:
        x-user: {exact: beta}
        retries: {prefix: "3"}
        x-present: {}
      withoutHeaders:
        x-skip: {regex: "true|yes"}
      queryParams:
        debug: {exact: "1"}
        exact: {prefix: a}
      port: 9080
      sourceLabels: {app: productpage, version: v2}
      sourceNamespace: shop
      gateways: [mesh]
      ignoreUriCase: true
      statPrefix: canary-beta
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 90
      headers:
        request:
          set: {x-canary: "true", retries: "0"}
          add: {x-trace: "on"}
          remove: [x-internal]
        response:
          set: {cache-control: no-store}
    - destination: {host: reviews, subset: v1}
      weight: 10
    rewrite:
      authority: reviews.internal
      uriRegexRewrite: {match: "^/api/v2(.*)", rewrite: "/v2\\\\1"}
    timeout: 5s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx,reset,connect-failure,retriable-status-codes
      retryRemoteLocalities: true
      retryIgnorePreviousHosts: true
      backoff: 50ms
    fault:
      delay: {fixedDelay: 1s, percentage: {value: 0.5}}
      abort: {httpStatus: 503, percentage: {value: 0.1}}
    mirrors:
    - destination: {host: reviews-shadow, subset: v3, port: {number: 9080}}
      percentage: {value: 5.0}
    corsPolicy:
      allowOrigins: [{exact: "https://shop.example.com"}, {regex: "https://.*\\\\.example\\\\.org"}]
      allowMethods: [GET, POST]
      allowHeaders: [authorization, content-type]
      exposeHeaders: [x-request-id]
      maxAge: 24h
      allowCredentials: true
      unmatchedPreflights: IGNORE
    headers:
      request: {set: {x-route: canary}}
      response: {remove: [server]}
  - name: legacy
    match: [{uri: {exact: /old}}]
    redirect: {uri: /api/v2, authority: reviews.example.com, scheme: https, redirectCode: 308,
               port: 8443}
  - name: health
    match: [{uri: {exact: /healthz}}]
    directResponse: {status: 200, body: {string: ok}}
  - name: default
    route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews-shadow, port: {number: 9080}}
    mirrorPercentage: {value: 1.5}
  tls:
  - match:
    - sniHosts: [reviews.example.com]
      destinationSubnets: [10.0.0.0/8]
      port: 443
      sourceLabels: {app: edge}
      sourceNamespace: shop
      gateways: [istio-system/public]
    route:
    - destination: {host: reviews, port: {number: 9443}}
      weight: 100
  tcp:
  - match:
    - destinationSubnets: [10.1.0.0/16]
      port: 27017
      sourceSubnet: 10.2.0.0/16
      sourceLabels: {app: worker}
      sourceNamespace: shop
      gateways: [mesh]
    route:
    - destination: {host: mongo.db.svc.cluster.local, port: {number: 27017}}
      weight: 100
status:
  observedGeneration: 3
  conditions: [{type: Reconciled, status: "True"}]
  validationMessages: [{type: {code: IST0101}, level: ERROR}]
"""

DESTINATION_RULE = """
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
  namespace: shop
spec:
  host: reviews.shop.svc.cluster.local
  exportTo: ["*"]
  workloadSelector:
    matchLabels: {app: productpage, istio.io/rev: canary}
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
      localityLbSetting:
        enabled: true
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
        failoverPriority: [topology.kubernetes.io/region, topology.kubernetes.io/zone]
      warmupDurationSecs: 30s
      backendUtilization:
        errorUtilizationPenaltyPercent: 2
        metricNamesForComputingUtilization: [named_metrics.cpu]
        weightExpirationPeriod: 180s
        weightStabilizationPeriod: 10s
        weightUpdatePeriod: 1s
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 250ms
        tcpKeepalive: {probes: 3, time: 600s, interval: 75s}
        maxConnectionDuration: 1h
        idleTimeout: 30m
      http:
        http1MaxPendingRequests: 64
        http2MaxRequests: 1000
        maxRequestsPerConnection: 10
        maxRetries: 3
        idleTimeout: 60s
        h2UpgradePolicy: UPGRADE
        useClientProtocol: false
        maxConcurrentStreams: 128
        http2KeepAlive: {interval: 15s, timeout: 5s}
    outlierDetection:
      outlierDetectionHttpErrorCodes: [503, 504]
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 5
      consecutiveGatewayErrors: 3
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
      minHealthPercent: 30
    tls:
      mode: ISTIO_MUTUAL
      sni: reviews.shop.svc.cluster.local
      subjectAltNames: [spiffe://cluster.local/ns/shop/sa/reviews]
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer:
        consistentHash:
          httpCookie:
            name: session
            path: /
            ttl: 3600s
            attributes: [{name: SameSite, value: Strict}, {name: Secure}]
          ringHash: {minimumRingSize: 1024}
      connectionPool:
        http: {http2MaxRequests: 500}
      outlierDetection: {consecutive5xxErrors: 10}
      tls: {mode: ISTIO_MUTUAL}
    - port: {number: 9443}
      loadBalancer:
        consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}
    proxyProtocol: {version: V2}
    retryBudget: {percent: 20.0, minRetryConcurrency: 3, budgetInterval: 10s}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2, track: canary}
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
        warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}
        zoneAwareLbSetting:
          enabled: true
          failover: [{from: us-east, to: eu-west}]
          failoverPriority: [topology.kubernetes.io/zone]
          minClusterSize: 3
        backendUtilization: {weightUpdatePeriod: 2s, errorUtilizationPenaltyPercent: 1}
      connectionPool:
        tcp: {maxConnections: 10}
        http: {http2KeepAlive: {interval: 30s, timeout: 10s}}
      outlierDetection: {outlierDetectionHttpErrorCodes: [502]}
  - name: sticky
    labels: {version: v3}
    trafficPolicy:
      loadBalancer:
        consistentHash: {useSourceIp: true}
        localityLbSetting:
          failover: [{from: us-east, to: eu-west}]
"""

EGRESS_DESTINATION_RULE = """
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: partner, namespace: shop}
spec:
  host: api.partner.example.com
  trafficPolicy:
    tunnel: {protocol: CONNECT, targetHost: api.partner.example.com, targetPort: 443}
    tls:
      mode: MUTUAL
      credentialName: partner-client
      sni: api.partner.example.com
      insecureSkipVerify: false
      subjectAltNames: [api.partner.example.com]
    loadBalancer:
      consistentHash: {httpQueryParameterName: tenant, minimumRingSize: 2048}
"""

GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: public
  namespace: istio-system
  finalizers: [example.com/keep]
  ownerReferences:
  - {apiVersion: v1, kind: ConfigMap, name: owner, uid: 1f0c, controller: true}
spec:
  selector: {istio: ingressgateway, app.kubernetes.io/name: edge}
  servers:
  - name: http
    port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop/*.example.com"]
    tls: {httpsRedirect: true}
  - name: https
    port: {number: 443, name: https, protocol: HTTPS, targetPort: 8443}
    hosts: ["*.example.com"]
    tls:
      mode: SIMPLE
      credentialName: web-cert
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256]
  - name: mtls
    port: {number: 8443, name: https-mtls, protocol: HTTPS}
    hosts: [partners.example.com]
    bind: 0.0.0.0
    tls:
      mode: MUTUAL
      credentialName: partners-cert
      subjectAltNames: [partner-a.example.com]
      verifyCertificateSpki: [2hq1aFfGmBKp5Ckg8ooi+EP8bH1JyQ0zpzWr0tGpYA4=]
      verifyCertificateHash: ["AB:CD:EF"]
  - name: passthrough
    port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.global"]
    tls: {mode: AUTO_PASSTHROUGH}
"""

SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner-api, namespace: shop}
spec:
  hosts: [api.partner.example.com]
  addresses: [240.240.0.10]
  ports:
  - {number: 443, name: https, protocol: TLS}
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  location: MESH_EXTERNAL
  resolution: STATIC
  exportTo: [".", istio-system]
  subjectAltNames: [spiffe://partner.example.com/sa/api]
  endpoints:
  - address: 203.0.113.10
    ports: {https: 8443, http: 8080}
    labels: {region: eu, any/label-key: x}
    network: external
    locality: eu-west/zone-a
    weight: 3
    serviceAccount: partner
  - address: 203.0.113.11
"""

SERVICE_ENTRY_SELECTOR = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: shop}
spec:
  hosts: [legacy.shop.internal]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels: {app: legacy}
"""

SIDECAR = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: shop}
spec:
  workloadSelector:
    labels: {app: reviews}
  inboundConnectionPool:
    http: {http1MaxPendingRequests: 100, idleTimeout: 30s}
    tcp: {maxConnections: 1000}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
    captureMode: DEFAULT
    connectionPool:
      tcp: {connectTimeout: 1s}
      http: {maxRequestsPerConnection: 100}
  - port: {number: 9443, protocol: HTTPS, name: https}
    defaultEndpoint: 127.0.0.1:8443
    tls:
      mode: SIMPLE
      privateKey: /etc/certs/key.pem
      serverCertificate: /etc/certs/cert.pem
      minProtocolVersion: TLSV1_2
  egress:
  - port: {number: 3306, protocol: MYSQL, name: mysql}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: [db/mysql.db.svc.cluster.local]
  - hosts: ["./*", istio-system/*]
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress.istio-system.svc.cluster.local, subset: v1, port: {number: 443}}
"""

WORKLOAD_ENTRY = """
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata:
  name: vm-1
  namespace: shop
  labels: {app: legacy}
spec:
  address: 10.128.0.7
  ports: {http: 8080, grpc-admin: 9090}
  labels: {app: legacy, version: v1}
  network: vm-net
  locality: us-central1/us-central1-a
  weight: 2
  serviceAccount: legacy
"""

AUTHORIZATION_POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/web]
        notPrincipals: ["*/sa/evil"]
        requestPrincipals: ["https://issuer.example.com/*"]
        notRequestPrincipals: [other/sub]
        namespaces: [shop]
        notNamespaces: [test]
        ipBlocks: [10.0.0.0/8]
        notIpBlocks: [10.9.0.1]
        remoteIpBlocks: [192.0.2.0/24]
        notRemoteIpBlocks: [192.0.2.7]
    - source:
        serviceAccounts: [shop/web]
        notServiceAccounts: [bot]
        trustDomains: [cluster.local]
    to:
    - operation:
        hosts: [api.shop]
        notHosts: ["*.internal"]
        ports: ["8080"]
        notPorts: ["9090"]
        methods: [GET]
        notMethods: [DELETE]
        paths: ["/api/*"]
        notPaths: ["/api/admin/{**}"]
    when:
    - {key: "request.headers[x-tenant]", values: [a], notValues: [b]}
"""

FULL_EXAMPLES = {
    "VirtualService": VIRTUAL_SERVICE,
    "DestinationRule": DESTINATION_RULE,
    "DestinationRule/egress": EGRESS_DESTINATION_RULE,
    "Gateway": GATEWAY,
    "ServiceEntry": SERVICE_ENTRY,
    "ServiceEntry/selector": SERVICE_ENTRY_SELECTOR,
    "Sidecar": SIDECAR,
    "WorkloadEntry": WORKLOAD_ENTRY,
    "AuthorizationPolicy": AUTHORIZATION_POLICY,
}


def load(text: str) -> dict[str, Any]:
    raw = yaml.safe_load(text)
    assert isinstance(raw, dict)
    return raw


def edit(text: str, path: str, value: Any) -> dict[str, Any]:
    """The object with `value` set at `path` (e.g. spec.http[0].retris), creating mappings."""
    raw = load(text)
    steps = [int(s) if s.isdigit() else s for s in re.findall(r"[^.\[\]]+", path)]
    node: Any = raw
    for step in steps[:-1]:
        if isinstance(step, str) and step not in node:
            node[step] = {}
        node = node[step]
    node[steps[-1]] = value
    return raw


def rejected(raw: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_object(raw)
    return info.value


@pytest.mark.parametrize("name", sorted(FULL_EXAMPLES))
def test_full_examples_parse(name: str) -> None:
    key, _ = parse_object(load(FULL_EXAMPLES[name]))
    assert key.kind == name.split("/")[0]


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
@pytest.mark.parametrize("name", sorted(FULL_EXAMPLES))
def test_every_version_shares_the_schema(name: str, version: str) -> None:
    raw = load(FULL_EXAMPLES[name])
    group = raw["apiVersion"].rpartition("/")[0]
    if group == "security.istio.io" and version == "v1alpha3":
        return  # security.istio.io serves v1 and v1beta1 only
    raw["apiVersion"] = f"{group}/{version}"
    parse_object(raw)


def test_fields_istiolite_does_not_translate_are_still_known() -> None:
    """Checked by name only: combinations the parsers refuse for other reasons (a delegating
    route, the deprecated mirror percent, Istio's own TLS file paths …) are still valid Istio."""
    vs = load(VIRTUAL_SERVICE)
    vs["spec"]["http"].append(
        {
            "name": "delegated",
            "match": [{"uri": {"prefix": "/reviews"}}],
            "delegate": {"name": "reviews-routes", "namespace": "team-a"},
        }
    )
    route = vs["spec"]["http"][3]
    route["mirrorPercent"] = 5
    route["mirror_percent"] = 5
    route["fault"] = {
        "delay": {"exponentialDelay": "1s", "percent": 10},
        "abort": {"grpcStatus": "UNAVAILABLE", "http2Error": "REFUSED_STREAM"},
    }
    route["corsPolicy"] = {"allowOrigin": ["*"]}
    route["directResponse"] = {"status": 200, "body": {"bytes": "b2s="}}
    check_fields(vs)
    gw = load(GATEWAY)
    gw["spec"]["servers"][1]["tls"] = {
        "mode": "OPTIONAL_MUTUAL",
        "serverCertificate": "/etc/certs/cert.pem",
        "privateKey": "/etc/certs/key.pem",
        "caCertificates": "/etc/certs/ca.pem",
        "caCrl": "/etc/certs/crl.pem",
        "tlsCertificates": [
            {"serverCertificate": "/a/cert.pem", "privateKey": "/a/key.pem"},
            {"serverCertificate": "/b/cert.pem", "privateKey": "/b/key.pem", "caCertificates": "x"},
        ],
    }
    gw["spec"]["servers"][0]["defaultEndpoint"] = "127.0.0.1:8080"
    gw["spec"]["servers"][2]["tls"] = {
        "mode": "MUTUAL",
        "credentialNames": ["partners-rsa", "partners-ecdsa"],
    }
    check_fields(gw)
    dr = load(EGRESS_DESTINATION_RULE)
    dr["spec"]["trafficPolicy"]["tls"].update(
        clientCertificate="/c.pem", privateKey="/k.pem", caCertificates="/ca.pem", caCrl="/crl"
    )
    dr["spec"]["trafficPolicy"]["outlierDetection"] = {"consecutiveErrors": 5}
    check_fields(dr)


# --- typos at several depths, each naming the exact path --------------------------------------

TYPOS = [
    # (example, where the misspelt key goes, expected hint or None)
    ("VirtualService", "spec.htp", "http"),
    ("VirtualService", "spec.http[0].retris", "retries"),
    ("VirtualService", "spec.http[0].retries.attempt", "attempts"),
    ("VirtualService", "spec.http[0].match[0].uri.exakt", "exact"),
    ("VirtualService", "spec.http[0].match[0].headers.x-user.prefx", "prefix"),
    ("VirtualService", "spec.http[0].match[0].queryParams.debug.regx", "regex"),
    ("VirtualService", "spec.http[0].route[1].destination.port.numbr", "number"),
    ("VirtualService", "spec.http[0].route[0].headers.request.sett", "set"),
    ("VirtualService", "spec.http[0].fault.delay.fixedDelays", "fixedDelay"),
    ("VirtualService", "spec.http[0].corsPolicy.allowOrigins[1].prefx", "prefix"),
    ("VirtualService", "spec.http[0].mirrors[0].percentage.valeu", "value"),
    ("VirtualService", "spec.tls[0].match[0].sniHost", "sniHosts"),
    ("VirtualService", "spec.tcp[0].match[0].sourceSubnets", "sourceSubnet"),
    ("VirtualService", "spec.http[0].per_try_timeout", None),
    ("DestinationRule", "spec.trafficPolicy.loadBalancer.simpel", "simple"),
    (
        "DestinationRule",
        "spec.trafficPolicy.portLevelSettings[0].loadBalancer.consistentHash.httpCookie.tll",
        "ttl",
    ),
    (
        "DestinationRule",
        "spec.subsets[1].trafficPolicy.connectionPool.tcp.maxConnection",
        "maxConnections",
    ),
    ("DestinationRule", "spec.subsets[1].trafficPolicy.loadBalancer.warmup.minPercent", None),
    (
        "DestinationRule",
        "spec.trafficPolicy.outlierDetection.consecutive5xxError",
        "consecutive5xxErrors",
    ),
    ("DestinationRule", "spec.trafficPolicy.tls.credentialNames", "credentialName"),
    (
        "DestinationRule",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].too",
        None,
    ),
    ("DestinationRule", "spec.workloadSelector.labels", None),
    ("Gateway", "spec.selecter", "selector"),
    ("Gateway", "spec.servers[1].tls.credentialNmae", "credentialName"),
    ("Gateway", "spec.servers[1].port.targetport", "targetPort"),
    ("ServiceEntry", "spec.resoluton", "resolution"),
    ("ServiceEntry", "spec.ports[1].targetPorts", "targetPort"),
    ("ServiceEntry", "spec.endpoints[0].serviceAcount", "serviceAccount"),
    ("Sidecar", "spec.egress[0].hostss", "hosts"),
    (
        "Sidecar",
        "spec.ingress[0].connectionPool.http.maxRequestPerConnection",
        "maxRequestsPerConnection",
    ),
    ("Sidecar", "spec.outboundTrafficPolicy.egressProxy.subsets", "subset"),
    ("Sidecar", "spec.inboundConnectionPool.tcp.tcpKeepAlive", "tcpKeepalive"),
    ("WorkloadEntry", "spec.adress", "address"),
    ("WorkloadEntry", "spec.serviceaccount", "serviceAccount"),
    ("WorkloadEntry", "specs", "spec"),
    ("Gateway", "metadata.lables", "labels"),
]


@pytest.mark.parametrize(("example", "path", "hint"), TYPOS)
def test_typo_names_the_exact_path(example: str, path: str, hint: str | None) -> None:
    err = rejected(edit(FULL_EXAMPLES[example], path, {"attempts": 3}))
    assert err.field == path
    bad = path.rsplit(".", 1)[-1]
    assert err.message.startswith(f'unknown field "{bad}"')
    if hint is not None:
        assert f'did you mean "{hint}"?' in err.message


def test_the_first_unknown_field_in_document_order_is_reported() -> None:
    raw = load(VIRTUAL_SERVICE)
    raw["spec"]["http"][1]["tiemout"] = "1s"
    raw["spec"]["http"][2]["retris"] = {}
    assert rejected(raw).field == "spec.http[1].tiemout"


def test_error_reads_like_kubectl() -> None:
    err = rejected(edit(VIRTUAL_SERVICE, "spec.http[0].retris", {"attempts": 3}))
    assert str(err) == 'spec.http[0].retris: unknown field "retris"; did you mean "retries"?'


def test_snake_case_points_at_the_json_name() -> None:
    err = rejected(edit(VIRTUAL_SERVICE, "spec.http[0].retries.per_try_timeout", "1s"))
    assert err.field == "spec.http[0].retries.per_try_timeout"
    assert 'did you mean "perTryTimeout"?' in err.message


def test_no_hint_when_nothing_is_close_and_small_messages_list_their_fields() -> None:
    err = rejected(edit(VIRTUAL_SERVICE, "spec.http[0].match[0].uri.glob", "/x*"))
    assert err.message == 'unknown field "glob" (known: exact, prefix, regex)'
    err = rejected(edit(VIRTUAL_SERVICE, "spec.http[0].zzz", 1))
    assert err.message == 'unknown field "zzz"'


def test_suggest() -> None:
    known = {"retries", "route", "rewrite", "timeout"}
    assert suggest("retris", known) == "retries"
    assert suggest("Timeout", known) == "timeout"
    assert suggest("qqq", known) is None


# --- maps with user keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "path"),
    [
        ("VirtualService", "metadata.labels"),
        ("VirtualService", "metadata.annotations"),
        ("VirtualService", "spec.http[0].match[0].sourceLabels"),
        ("VirtualService", "spec.http[0].route[0].headers.request.set"),
        ("VirtualService", "spec.http[0].route[0].headers.response.add"),
        ("VirtualService", "spec.tls[0].match[0].sourceLabels"),
        ("VirtualService", "spec.tcp[0].match[0].sourceLabels"),
        ("DestinationRule", "spec.subsets[0].labels"),
        ("DestinationRule", "spec.workloadSelector.matchLabels"),
        ("DestinationRule", "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to"),
        ("Gateway", "spec.selector"),
        ("ServiceEntry", "spec.endpoints[0].labels"),
        ("ServiceEntry/selector", "spec.workloadSelector.labels"),
        ("Sidecar", "spec.workloadSelector.labels"),
        ("WorkloadEntry", "spec.labels"),
    ],
)
def test_user_keyed_maps_accept_any_key(example: str, path: str) -> None:
    value = {"retris": "a", "spec": "b", "example.com/any-key_1": "c", "*": "d"}
    if path.endswith((".to", "ports")):
        value = {k: 1 for k in value}
    check_fields(edit(FULL_EXAMPLES[example], path, value))


@pytest.mark.parametrize("path", ["spec.ports", "spec.endpoints[0].ports"])
def test_port_name_maps_accept_any_key(path: str) -> None:
    example = "WorkloadEntry" if path == "spec.ports" else "ServiceEntry"
    check_fields(edit(FULL_EXAMPLES[example], path, {"http-web": 80, "grpc_x": 81}))


@pytest.mark.parametrize("field", ["headers", "withoutHeaders", "queryParams"])
def test_match_maps_check_their_values_not_their_keys(field: str) -> None:
    raw = edit(VIRTUAL_SERVICE, f"spec.http[0].match[0].{field}", {"any-Name_1": {"exact": "a"}})
    check_fields(raw)
    raw["spec"]["http"][0]["match"][0][field]["any-Name_1"] = {"exakt": "a"}
    with pytest.raises(ValidationError) as info:
        check_fields(raw)
    assert info.value.field == f"spec.http[0].match[0].{field}.any-Name_1.exakt"


# --- scope of the check -------------------------------------------------------------------------


def test_status_is_allowed_and_not_checked() -> None:
    raw = load(SERVICE_ENTRY)
    raw["status"] = {"anything": {"goes": [1, {"here": True}]}}
    parse_object(raw)


def test_unknown_top_level_key() -> None:
    raw = load(SIDECAR)
    raw["extra"] = 1
    err = rejected(raw)
    assert err.field == "extra"


def test_metadata_subtrees_are_not_descended() -> None:
    raw = load(GATEWAY)
    raw["metadata"]["managedFields"] = [{"anything": {"f:spec": {}}}]
    raw["metadata"]["ownerReferences"] = [{"whatever": 1}]
    parse_object(raw)


def test_wrong_shapes_are_left_to_the_parser() -> None:
    """A string where a message belongs is a type error, reported by the kind's parser."""
    raw = edit(VIRTUAL_SERVICE, "spec.http[0].retries", "three")
    check_fields(raw)
    raw = edit(VIRTUAL_SERVICE, "spec.http", "not a list")
    check_fields(raw)


def test_kubernetes_kinds_are_not_checked() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "somethingNew": 1},
        "spec": {"ports": [{"name": "http", "port": 80}], "futureField": True},
        "extra": {},
    }
    parse_object(service)


def test_unknown_kind_stays_unknown() -> None:
    raw = {"apiVersion": "networking.istio.io/v1", "kind": "EnvoyFilter", "spec": {"x": 1}}
    with pytest.raises(UnknownKind):
        parse_object(raw)


def test_the_check_runs_before_the_parser() -> None:
    """A typo is named even where the parser would have failed first on something else."""
    raw = load(DESTINATION_RULE)
    raw["spec"]["host"] = ""  # the parser would say spec.host is required
    raw["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["conectTimeout"] = "1s"
    assert rejected(raw).field == "spec.trafficPolicy.connectionPool.tcp.conectTimeout"


# --- the schema itself --------------------------------------------------------------------------


def test_every_kind_istiolite_reads_from_istio_has_a_schema() -> None:
    istio = {name for name, kind in KINDS.items() if kind.group.endswith(".istio.io")}
    assert {"VirtualService", "DestinationRule", "Gateway", "ServiceEntry"} <= istio
    assert {"Sidecar", "WorkloadEntry", "PeerAuthentication"} <= istio
    assert set(SPECS) == istio
    assert set(OBJECTS) == set(SPECS)


def test_field_names_are_json_names() -> None:
    camel = re.compile(r"^[a-z][a-zA-Z0-9]*$")
    for kind, msg in OBJECTS.items():
        for path in field_paths(msg):
            for step in path.split("."):
                assert step == "*" or camel.match(step) or step in ("mirror_percent", "jwks_uri"), (
                    kind,
                    path,
                )


def test_full_examples_use_most_of_the_schema() -> None:
    """The examples above exercise the schema widely (so a wrong name in it would show)."""

    def used(node: Any, msg: Msg, prefix: str, out: set[str]) -> None:
        if isinstance(node, list):
            for item in node:
                used(item, msg, prefix, out)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            field = msg.fields.get(key)
            if isinstance(field, MapOf) and isinstance(value, dict):
                for item in value.values():
                    used(item, field.value, f"{path}.*", out)
            elif isinstance(field, Msg):
                used(value, field, path, out)

    covered: set[str] = set()
    for name, text in FULL_EXAMPLES.items():
        kind = name.split("/")[0]
        raw = load(text)
        spec = OBJECTS[kind].fields["spec"]
        assert isinstance(spec, Msg)
        used(raw["spec"], spec, kind, covered)
    # The networking kinds (the security kinds have their own tests).
    examples = {name.split("/")[0] for name in FULL_EXAMPLES}
    every = {
        f"{kind}.{p}" for kind, msg in SPECS.items() if kind in examples for p in field_paths(msg)
    }
    assert covered <= every
    assert len(covered) / len(every) > 0.5


def test_examples_are_not_mutated_by_the_check() -> None:
    raw = load(DESTINATION_RULE)
    before = copy.deepcopy(raw)
    check_fields(raw)
    assert raw == before
