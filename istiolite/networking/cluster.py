"""CDS: outbound clusters per service port, inbound clusters for the proxy's own workload."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import TypeAlias

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from istiolite.model.protocol import Protocol
from istiolite.model.proxy import Proxy
from istiolite.model.service import Service, ServicePort
from istiolite.networking.cluster_mtls import apply_istio_mtls
from istiolite.networking.guard import guarded, object_name
from istiolite.networking.names import (
    BLACKHOLE_CLUSTER,
    INBOUND_PASSTHROUGH_BIND_IP,
    INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER,
    Direction,
    cluster_name,
)
from istiolite.networking.traffic_policy import (
    apply_traffic_policy,
    destination_rule_for,
    policy_for,
)
from istiolite.networking.typed import ads_config_source, duration, pack, socket_address, uint32
from istiolite.networking.workload import InboundPort
from istiolite.push.context import PushContext

CONNECT_TIMEOUT_SECONDS = 10.0
# istiod lifts Envoy's default circuit breakers (1024) unless a DestinationRule sets them.
_UNLIMITED = 4294967295
_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

Cluster: TypeAlias = cluster_pb2.Cluster


def _default_circuit_breakers() -> circuit_breaker_pb2.CircuitBreakers:
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                max_connections=uint32(_UNLIMITED),
                max_pending_requests=uint32(_UNLIMITED),
                max_requests=uint32(_UNLIMITED),
                max_retries=uint32(_UNLIMITED),
                track_remaining=True,
            )
        ]
    )


def _protocol_options(protocol: Protocol) -> dict[str, object]:
    options = http_protocol_options_pb2.HttpProtocolOptions
    if protocol.is_http2:
        value = options(
            explicit_http_config=options.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
    elif protocol == Protocol.AUTO:
        # Sniffed ports keep whatever protocol the client spoke.
        value = options(
            use_downstream_protocol_config=options.UseDownstreamHttpConfig(
                http_protocol_options=protocol_pb2.Http1ProtocolOptions(),
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
            )
        )
    else:
        return {}
    return {_HTTP_OPTIONS_KEY: pack(value)}


def outbound_cluster(
    ctx: PushContext,
    service: Service,
    port: ServicePort,
    subset: str = "",
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    auto_mtls: bool = False,
) -> Cluster:
    """`auto_mtls`: the proxy holds a mesh certificate, so it may speak Istio mTLS to
    endpoints with sidecars (networking.cluster_mtls)."""
    host = ctx.hostname(service)
    name = cluster_name(Direction.OUTBOUND, port.port, subset, host)
    cluster = Cluster(
        name=name,
        connect_timeout=duration(CONNECT_TIMEOUT_SECONDS),
        circuit_breakers=_default_circuit_breakers(),
    )
    for key, value in _protocol_options(port.protocol).items():
        cluster.typed_extension_protocol_options[key].CopyFrom(value)
    if service.type == "ExternalName":
        cluster.type = Cluster.STRICT_DNS
        cluster.dns_lookup_family = Cluster.V4_ONLY
        cluster.lb_policy = Cluster.LEAST_REQUEST
        cluster.load_assignment.CopyFrom(
            endpoint_pb2.ClusterLoadAssignment(
                cluster_name=name,
                endpoints=[
                    endpoint_components_pb2.LocalityLbEndpoints(
                        lb_endpoints=[_lb_endpoint(service.external_name, port.port)]
                    )
                ],
            )
        )
    elif service.type == "ServiceEntry" and service.resolution.startswith("DNS"):
        # DNS: Envoy resolves the endpoints' names (or the host itself when none are listed).
        cluster.type = Cluster.STRICT_DNS if service.resolution == "DNS" else Cluster.LOGICAL_DNS
        cluster.dns_lookup_family = Cluster.V4_ONLY
        cluster.lb_policy = Cluster.LEAST_REQUEST
        endpoints = ctx.endpoints(service, port) or []
        # a ServiceEntry's targetPort is a number (default: port), never a container port name
        targets = [(e.address, e.port) for e in endpoints] or [
            (service.host, int(port.target_port))
        ]
        if cluster.type == Cluster.LOGICAL_DNS:
            targets = targets[:1]  # Envoy allows one address; istiod takes the first
        cluster.load_assignment.CopyFrom(
            endpoint_pb2.ClusterLoadAssignment(
                cluster_name=name,
                endpoints=[
                    endpoint_components_pb2.LocalityLbEndpoints(
                        lb_endpoints=[_lb_endpoint(a, int(p)) for a, p in targets]
                    )
                ],
            )
        )
    elif service.headless or (service.type == "ServiceEntry" and service.resolution == "NONE"):
        # Headless, or an entry with resolution NONE: the client already picked the address;
        # send the connection where it was going.
        cluster.type = Cluster.ORIGINAL_DST
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
    else:
        cluster.type = Cluster.EDS
        cluster.lb_policy = Cluster.LEAST_REQUEST
        cluster.eds_cluster_config.CopyFrom(
            Cluster.EdsClusterConfig(eds_config=ads_config_source(), service_name=name)
        )
    # The DestinationRule of the proxy's namespace view (istiod's SidecarScope.DestinationRule).
    policy = policy_for(ctx, host, subset, port.port, namespace, labels)
    apply_traffic_policy(cluster, policy, port.protocol)
    apply_istio_mtls(ctx, cluster, service, port, subset, policy, auto_mtls=auto_mtls)
    return cluster


def outbound_clusters(
    ctx: PushContext,
    services: Sequence[Service] | None = None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    auto_mtls: bool = False,
) -> list[Cluster]:
    """One cluster per service port, with the DestinationRules proxies in `namespace` apply
    (`labels`: a sidecar's, for rules with a workloadSelector); identical for every sidecar of
    one scope, so built once per push and scope."""
    clusters = []
    for service in ctx.services if services is None else services:
        # Subsets of a DestinationRule become clusters of their own (EDS services only).
        subsets = (
            []
            if service.headless or service.type == "ExternalName"
            else ctx.subsets(ctx.hostname(service), namespace, labels)
        )
        for port in service.ports:
            if port.protocol == Protocol.UDP:
                continue
            for subset in ["", *(s.name for s in subsets)]:
                built = _guarded_cluster(ctx, service, port, subset, namespace, labels, auto_mtls)
                if built is not None:
                    clusters.append(built)
    return clusters


def _guarded_cluster(
    ctx: PushContext,
    service: Service,
    port: ServicePort,
    subset: str,
    namespace: str | None,
    labels: Mapping[str, str] | None,
    auto_mtls: bool,
) -> Cluster | None:
    """The cluster, or None (reported) when translating it raised. Left out whole rather than
    without the policy: a cluster missing its DestinationRule's TLS settings would send
    plaintext where the author asked for TLS."""

    def culprit() -> str:
        rule = destination_rule_for(ctx, ctx.hostname(service), namespace, labels)
        if rule is not None:
            return object_name("DestinationRule", rule)
        return object_name("ServiceEntry" if service.type == "ServiceEntry" else "Service", service)

    return guarded(
        partial(outbound_cluster, ctx, service, port, subset, namespace, labels, auto_mtls),
        culprit,
        dropped="cluster "
        + cluster_name(Direction.OUTBOUND, port.port, subset, ctx.hostname(service)),
    )


def _lb_endpoint(address: str, port: int) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(address, port))
    )


def inbound_cluster(port: InboundPort) -> Cluster:
    name = cluster_name(Direction.INBOUND, port.target_port)
    cluster = Cluster(
        name=name,
        type=Cluster.STATIC,
        connect_timeout=duration(CONNECT_TIMEOUT_SECONDS),
        circuit_breakers=_default_circuit_breakers(),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[_lb_endpoint("127.0.0.1", port.target_port)]
                )
            ],
        ),
    )
    for key, value in _protocol_options(port.protocol).items():
        cluster.typed_extension_protocol_options[key].CopyFrom(value)
    return cluster


def fixed_clusters(proxy: Proxy) -> list[Cluster]:
    """PassthroughCluster, BlackHoleCluster and InboundPassthroughCluster, as istiod sends them."""
    passthrough = Cluster(
        name=PASSTHROUGH_CLUSTER,
        type=Cluster.ORIGINAL_DST,
        lb_policy=Cluster.CLUSTER_PROVIDED,
        connect_timeout=duration(CONNECT_TIMEOUT_SECONDS),
        circuit_breakers=_default_circuit_breakers(),
    )
    blackhole = Cluster(
        name=BLACKHOLE_CLUSTER,
        type=Cluster.STATIC,
        connect_timeout=duration(CONNECT_TIMEOUT_SECONDS),
    )
    inbound_passthrough = Cluster(
        name=INBOUND_PASSTHROUGH_CLUSTER,
        type=Cluster.ORIGINAL_DST,
        lb_policy=Cluster.CLUSTER_PROVIDED,
        connect_timeout=duration(CONNECT_TIMEOUT_SECONDS),
        circuit_breakers=_default_circuit_breakers(),
        upstream_bind_config=address_pb2.BindConfig(
            source_address=address_pb2.SocketAddress(
                address=INBOUND_PASSTHROUGH_BIND_IP, port_value=0
            )
        ),
    )
    return [passthrough, blackhole, inbound_passthrough]
