"""DestinationRule traffic policies → Envoy cluster settings and route hash policies, as istiod's
cluster builder maps them (applyLoadBalancer, applyConnectionPool, applyOutlierDetection,
applyUpstreamTLSSettings, consistentHashToHashPolicy).

`apply_traffic_policy` fills in a cluster that the caller has just built (it owns the message);
everything else here is side-effect free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TypeAlias

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2

from istiolite.model.destinationrule import (
    UINT32_MAX,
    ClientTls,
    ConnectionPool,
    ConsistentHash,
    DestinationRule,
    LoadBalancer,
    LocalityLbSetting,
    OutlierDetection,
    TrafficPolicy,
)
from istiolite.model.protocol import Protocol
from istiolite.networking.guard import guarded, object_name
from istiolite.networking.tls_context import (
    CA_SUFFIX,
    CREDENTIAL_PREFIX,
    TLS_TRANSPORT_SOCKET,
    file_cert_resource,
    file_root_resource,
    sds_config,
    transport_socket,
)
from istiolite.networking.typed import duration, pack, uint32
from istiolite.push.context import PushContext

Cluster: TypeAlias = cluster_pb2.Cluster
HashPolicy: TypeAlias = route_components_pb2.RouteAction.HashPolicy
HttpProtocolOptions: TypeAlias = http_protocol_options_pb2.HttpProtocolOptions
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_SIMPLE = {
    "": Cluster.LEAST_REQUEST,
    "UNSPECIFIED": Cluster.LEAST_REQUEST,
    "LEAST_CONN": Cluster.LEAST_REQUEST,
    "LEAST_REQUEST": Cluster.LEAST_REQUEST,
    "ROUND_ROBIN": Cluster.ROUND_ROBIN,
    "RANDOM": Cluster.RANDOM,
}
_ENVOY_DEFAULT_MIN_RING_SIZE = 1024

# istiod verifies against the system roots when `caCertificates` is unset (its agent serves them as
# "file-root:system"). A plain Envoy has no agent: point it at the usual bundle of the Debian/Ubuntu
# images Envoy and istio/proxyv2 ship in. Where it is missing Envoy rejects the cluster: no
# unverified TLS by accident.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# credentialName → "kubernetes://<name>", its CA → "kubernetes://<name>-cacert", over ADS; as
# istiod, a name that already says its type is kept as it is.
_TYPED_CREDENTIALS = (CREDENTIAL_PREFIX, "kubernetes-gateway://", "configmap://")
_SAN_TYPES = (
    common_pb2.SubjectAltNameMatcher.DNS,
    common_pb2.SubjectAltNameMatcher.URI,
    common_pb2.SubjectAltNameMatcher.EMAIL,
    common_pb2.SubjectAltNameMatcher.IP_ADDRESS,
)


def destination_rule_for(
    ctx: PushContext,
    host: str,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> DestinationRule | None:
    """The DestinationRule proxies in `namespace` apply to a host (istiod's precedence: their
    namespace, the service's, the root namespace; in each an exact host, else the most specific
    wildcard). `None`: as a proxy of no namespace in particular (public rules only). `labels`:
    a sidecar's, for rules with a workloadSelector."""
    return ctx.destination_rule(host, namespace, labels)


def policy_for(
    ctx: PushContext,
    host: str,
    subset: str,
    port: int,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> TrafficPolicy | None:
    rule = destination_rule_for(ctx, host, namespace, labels)
    return rule.policy_for(subset, port) if rule else None


# --- cluster ------------------------------------------------------------------------------------


def apply_traffic_policy(
    cluster: Cluster, policy: TrafficPolicy | None, protocol: Protocol
) -> None:
    """Apply a merged (port- and subset-resolved) policy to a freshly built outbound cluster."""
    if policy is None:
        return
    apply_load_balancer(cluster, policy.load_balancer)
    if policy.connection_pool is not None:
        apply_connection_pool(cluster, policy.connection_pool, protocol)
    if policy.outlier_detection is not None:
        apply_outlier_detection(cluster, policy.outlier_detection)
    apply_locality_weighted_lb(cluster, policy)
    # Last, as istiod: ALPN depends on whether the pool settings made the cluster HTTP/2.
    apply_tls(cluster, policy.tls)


def apply_load_balancer(cluster: Cluster, lb: LoadBalancer | None) -> None:
    # Original destination discovery only works with the original destination balancer.
    if cluster.type == Cluster.ORIGINAL_DST:
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
        return
    if lb is None:
        return
    if lb.simple == "PASSTHROUGH":
        cluster.type = Cluster.ORIGINAL_DST
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
        cluster.ClearField("eds_cluster_config")
        cluster.ClearField("load_assignment")
        return
    cluster.lb_policy = _SIMPLE.get(lb.simple, Cluster.LEAST_REQUEST)
    if lb.consistent_hash is not None:
        _apply_consistent_hash(cluster, lb.consistent_hash)


def _apply_consistent_hash(cluster: Cluster, ch: ConsistentHash) -> None:
    if ch.algorithm == "maglev":
        cluster.lb_policy = Cluster.MAGLEV
        if ch.maglev_table_size:
            cluster.maglev_lb_config.table_size.value = ch.maglev_table_size
        return
    cluster.lb_policy = Cluster.RING_HASH
    if ch.explicit_algorithm:
        if ch.minimum_ring_size:
            cluster.ring_hash_lb_config.minimum_ring_size.value = ch.minimum_ring_size
    else:
        # The deprecated form: istiod always writes the ring size, Envoy's default if unset.
        cluster.ring_hash_lb_config.minimum_ring_size.value = (
            ch.minimum_ring_size or _ENVOY_DEFAULT_MIN_RING_SIZE
        )


def _thresholds(cluster: Cluster) -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    """The default-priority thresholds, istiod's defaults (max uint32) where nothing is set."""
    if not cluster.circuit_breakers.thresholds:
        cluster.circuit_breakers.thresholds.add(
            max_connections=uint32(UINT32_MAX),
            max_pending_requests=uint32(UINT32_MAX),
            max_requests=uint32(UINT32_MAX),
            max_retries=uint32(UINT32_MAX),
            track_remaining=True,
        )
    return cluster.circuit_breakers.thresholds[0]


def apply_connection_pool(cluster: Cluster, pool: ConnectionPool, protocol: Protocol) -> None:
    thresholds = _thresholds(cluster)
    common = protocol_pb2.HttpProtocolOptions()
    touched_common = False
    if pool.http is not None:
        http = pool.http
        if http.http2_max_requests > 0:
            thresholds.max_requests.value = http.http2_max_requests
        if http.http1_max_pending_requests > 0:
            thresholds.max_pending_requests.value = http.http1_max_pending_requests
        if http.max_retries > 0:
            thresholds.max_retries.value = http.max_retries
        if http.idle_timeout is not None:
            common.idle_timeout.CopyFrom(duration(http.idle_timeout))
            touched_common = True
        if http.max_requests_per_connection > 0:
            common.max_requests_per_connection.value = http.max_requests_per_connection
            touched_common = True
    if pool.tcp is not None:
        tcp = pool.tcp
        if tcp.connect_timeout is not None:
            cluster.connect_timeout.CopyFrom(duration(tcp.connect_timeout))
        if tcp.max_connections > 0:
            thresholds.max_connections.value = tcp.max_connections
        if tcp.max_connection_duration is not None:
            common.max_connection_duration.CopyFrom(duration(tcp.max_connection_duration))
            touched_common = True
        if tcp.tcp_keepalive is not None:
            ka = tcp.tcp_keepalive
            keepalive = address_pb2.TcpKeepalive()
            if ka.probes is not None:
                keepalive.keepalive_probes.value = ka.probes
            if ka.time is not None:
                keepalive.keepalive_time.value = int(ka.time)
            if ka.interval is not None:
                keepalive.keepalive_interval.value = int(ka.interval)
            cluster.upstream_connection_options.tcp_keepalive.CopyFrom(keepalive)

    upgrade = (
        pool.http is not None and pool.http.h2_upgrade_policy == "UPGRADE" and protocol.is_http
    )
    use_client = pool.http is not None and pool.http.use_client_protocol and protocol.is_http
    if not (touched_common or upgrade or use_client):
        return
    options = _http_options(cluster)
    if touched_common:
        options.common_http_protocol_options.CopyFrom(common)
    if use_client:
        options.use_downstream_protocol_config.CopyFrom(
            HttpProtocolOptions.UseDownstreamHttpConfig(
                http_protocol_options=protocol_pb2.Http1ProtocolOptions(),
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
            )
        )
    elif upgrade:
        options.explicit_http_config.CopyFrom(
            HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
    if options.WhichOneof("upstream_protocol_options") is None:
        # Envoy rejects HttpProtocolOptions without an upstream protocol; istiod says HTTP/1.1.
        options.explicit_http_config.http_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(pack(options))


def _http_options(cluster: Cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    options = HttpProtocolOptions()
    if HTTP_OPTIONS_KEY in cluster.typed_extension_protocol_options:
        cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].Unpack(options)
    return options


def apply_outlier_detection(cluster: Cluster, outlier: OutlierDetection) -> None:
    out = outlier_detection_pb2.OutlierDetection(enforcing_success_rate=uint32(0))
    if outlier.consecutive_5xx_errors is not None:
        v = outlier.consecutive_5xx_errors
        out.consecutive_5xx.value = v
        out.enforcing_consecutive_5xx.value = 100 if v > 0 else 0
    if outlier.consecutive_gateway_errors is not None:
        v = outlier.consecutive_gateway_errors
        out.consecutive_gateway_failure.value = v
        out.enforcing_consecutive_gateway_failure.value = 100 if v > 0 else 0
    if outlier.interval is not None:
        out.interval.CopyFrom(duration(outlier.interval))
    if outlier.base_ejection_time is not None:
        out.base_ejection_time.CopyFrom(duration(outlier.base_ejection_time))
    if outlier.max_ejection_percent > 0:
        out.max_ejection_percent.value = outlier.max_ejection_percent
    cluster.outlier_detection.CopyFrom(out)
    # istiod disables the panic threshold unless minHealthPercent says otherwise: with few pods
    # per service, Envoy's default (50%) would send traffic to ejected hosts.
    cluster.common_lb_config.healthy_panic_threshold.CopyFrom(
        percent_pb2.Percent(value=float(outlier.min_health_percent))
    )


# --- locality load balancing ---------------------------------------------------------------------

# istiod's default MeshConfig.localityLbSetting: on, with nothing else set. A DestinationRule's own
# setting replaces it whole; `enabled: false` there turns locality load balancing off.
MESH_LOCALITY_LB = LocalityLbSetting(enabled=True)


@dataclass(frozen=True, slots=True)
class LocalityPolicy:
    """The locality setting in force for one cluster, and whether it may fail over (istiod only
    sets failover priorities with outlier detection: otherwise Envoy never sees a host fail)."""

    setting: LocalityLbSetting
    failover: bool


def locality_policy(policy: TrafficPolicy | None) -> LocalityPolicy | None:
    """What istiod's endpoint builder would do per proxy locality with a merged policy (its
    GetLocalityLbSetting and ApplyLocalityLoadBalancer), or None when every proxy gets the same
    endpoints: locality LB disabled, or neither `distribute` nor outlier detection."""
    lb = policy.load_balancer if policy else None
    setting = lb.locality_lb_setting if lb else None
    if setting is None:
        setting = MESH_LOCALITY_LB
    elif setting.enabled is False:
        return None
    failover = policy is not None and policy.outlier_detection is not None
    if setting.distribute or failover:
        return LocalityPolicy(setting, failover)
    return None


def apply_locality_weighted_lb(cluster: Cluster, policy: TrafficPolicy | None) -> None:
    """As istiod: Envoy honours locality weights only with `locality_weighted_lb_config`, set
    for `distribute`, or for `failover` / `failoverPriority` with outlier detection. EDS clusters
    only: istiolite's DNS clusters carry one locality without a weight, which would get nothing."""
    if cluster.type != Cluster.EDS:
        return
    found = locality_policy(policy)
    if found is None:
        return
    setting = found.setting
    if setting.distribute or (found.failover and (setting.failover or setting.failover_priority)):
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()


# --- upstream TLS -------------------------------------------------------------------------------


def apply_tls(cluster: Cluster, tls: ClientTls | None) -> None:
    """`trafficPolicy.tls` → the cluster's TLS transport socket, as istiod's
    buildUpstreamClusterTLSContext. DISABLE: none. ISTIO_MUTUAL: the mesh's certificates,
    applied by cluster_mtls (it needs the service's identities)."""
    if tls is None or tls.mode not in ("SIMPLE", "MUTUAL"):
        return
    cluster.transport_socket.CopyFrom(
        transport_socket(upstream_tls_context(tls, http2=_is_http2(cluster)))
    )
    # Without an explicit SNI, istiod has Envoy take it from the request's Host (auto_sni) and,
    # unless SANs are given or verification is off, check the certificate against that name.
    auto_sni = not tls.sni
    auto_san = auto_sni and not tls.subject_alt_names and not tls.insecure_skip_verify
    if auto_sni or auto_san:
        options = _http_options(cluster)
        upstream = options.upstream_http_protocol_options
        upstream.auto_sni = auto_sni
        upstream.auto_san_validation = auto_san
        if options.WhichOneof("upstream_protocol_options") is None:
            options.explicit_http_config.http_protocol_options.SetInParent()
        cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(pack(options))


def upstream_tls_context(tls: ClientTls, *, http2: bool = False) -> tls_pb2.UpstreamTlsContext:
    """The UpstreamTlsContext for SIMPLE or MUTUAL. Certificate files are named through SDS as
    istiod's "file-cert:"/"file-root:" secrets (served by istiolite, read by Envoy), so a
    missing file leaves this cluster unready instead of failing the whole CDS update."""
    common = tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        )
    )
    if tls.credential_name:
        if tls.mode == "MUTUAL":
            common.tls_certificate_sds_secret_configs.append(
                sds_config(upstream_credential(tls.credential_name))
            )
        if not tls.insecure_skip_verify:
            combined = common.combined_validation_context
            combined.default_validation_context.SetInParent()
            combined.default_validation_context.match_typed_subject_alt_names.extend(
                san_matchers(tls.subject_alt_names)
            )
            combined.validation_context_sds_secret_config.CopyFrom(
                sds_config(upstream_credential(tls.credential_name + CA_SUFFIX))
            )
    else:
        if tls.mode == "MUTUAL":
            common.tls_certificate_sds_secret_configs.append(
                sds_config(file_cert_resource(tls.client_certificate, tls.private_key))
            )
        if tls.insecure_skip_verify:
            common.validation_context.SetInParent()  # an empty context: nothing verified
        else:
            combined = common.combined_validation_context
            default = combined.default_validation_context
            default.match_typed_subject_alt_names.extend(san_matchers(tls.subject_alt_names))
            if tls.ca_crl:
                default.crl.filename = tls.ca_crl
            combined.validation_context_sds_secret_config.CopyFrom(
                sds_config(file_root_resource(tls.ca_certificates or SYSTEM_CA_BUNDLE))
            )
    if http2:
        common.alpn_protocols.append("h2")
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=tls.sni)


def upstream_credential(name: str) -> str:
    """The SDS resource name istiod gives a credentialName (kept if it already names a type)."""
    if name.startswith(_TYPED_CREDENTIALS):
        return name
    return CREDENTIAL_PREFIX + name


def san_matchers(names: tuple[str, ...]) -> list[common_pb2.SubjectAltNameMatcher]:
    """Exact matches of any SAN type, name by name: what istiod's (deprecated, untyped)
    match_subject_alt_names means to Envoy, spelled with the typed field."""
    return [
        common_pb2.SubjectAltNameMatcher(
            san_type=san_type, matcher=string_pb2.StringMatcher(exact=name)
        )
        for name in names
        for san_type in _SAN_TYPES
    ]


def _is_http2(cluster: Cluster) -> bool:
    if HTTP_OPTIONS_KEY not in cluster.typed_extension_protocol_options:
        return False
    options = _http_options(cluster)
    return bool(options.explicit_http_config.HasField("http2_protocol_options"))


# --- routes -------------------------------------------------------------------------------------


def hash_policy(policy: TrafficPolicy | None) -> list[HashPolicy]:
    """The route hash policy for a merged policy's consistent hash, or [] when it has none."""
    lb = policy.load_balancer if policy else None
    ch = lb.consistent_hash if lb else None
    if ch is None:
        return []
    if ch.http_header_name:
        return [HashPolicy(header=HashPolicy.Header(header_name=ch.http_header_name))]
    if ch.http_cookie is not None:
        cookie = HashPolicy.Cookie(name=ch.http_cookie.name, path=ch.http_cookie.path)
        if ch.http_cookie.ttl is not None:
            cookie.ttl.CopyFrom(duration(ch.http_cookie.ttl))
        return [HashPolicy(cookie=cookie)]
    if ch.use_source_ip:
        return [HashPolicy(connection_properties=HashPolicy.ConnectionProperties(source_ip=True))]
    if ch.http_query_parameter_name:
        return [
            HashPolicy(query_parameter=HashPolicy.QueryParameter(name=ch.http_query_parameter_name))
        ]
    return []


def route_hash_policies(
    ctx: PushContext, host: str, subset: str, port: int, namespace: str | None = None
) -> list[HashPolicy]:
    """What the route builder puts in RouteAction.hash_policy for a destination (fqdn host,
    subset or "", service port), for proxies in `namespace`. A rule whose hash policy fails to
    translate (a cookie TTL past what a Duration holds) loses only that: routes stay."""
    rule = destination_rule_for(ctx, host, namespace)
    if rule is None:
        return []
    found = guarded(
        partial(hash_policy, rule.policy_for(subset, port)),
        object_name("DestinationRule", rule),
        field="trafficPolicy.loadBalancer.consistentHash",
        dropped=f"consistent-hash policy of routes to {host}",
    )
    return found if found is not None else []


__all__ = [
    "TLS_TRANSPORT_SOCKET",
    "HashPolicy",
    "LocalityPolicy",
    "apply_locality_weighted_lb",
    "apply_tls",
    "apply_traffic_policy",
    "destination_rule_for",
    "hash_policy",
    "locality_policy",
    "policy_for",
    "route_hash_policies",
    "upstream_tls_context",
]
