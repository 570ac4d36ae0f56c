"""Network filters shared by inbound and outbound listeners: HTTP connection manager, TCP proxy."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from istiolite.networking.typed import ads_config_source, bool_value, pack

HCM_FILTER = "envoy.filters.network.http_connection_manager"
CORS_FILTER = "envoy.filters.http.cors"
FAULT_FILTER = "envoy.filters.http.fault"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
# What Envoy's http_inspector reports for plain-text HTTP; anything else falls to the TCP chain.
SNIFFED_HTTP_PROTOCOLS = ("http/1.1", "http/1.0", "h2c")


def http_connection_manager(
    stat_prefix: str,
    *,
    rds_name: str | None = None,
    route_config: route_pb2.RouteConfiguration | None = None,
    use_remote_address: bool = False,
    policy_filters: Sequence[hcm.HttpFilter] = (),
    sidecar_inbound: bool = False,
) -> lc.Filter:
    """`use_remote_address`: the edge of the mesh (a gateway) trusts only the peer address for
    x-forwarded-for; sidecars keep what the caller's side set. `sidecar_inbound`: as istiod,
    the application sees its caller's certificate in x-forwarded-client-cert (APPEND_FORWARD,
    with the peer's subject, URI SAN and DNS SANs)."""
    manager = hcm.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm.HttpConnectionManager.AUTO,
        use_remote_address=bool_value(use_remote_address),
        normalize_path=bool_value(True),
        http_filters=[
            *policy_filters,  # authentication and authorization come first (inbound_policy)
            # As istiod: CORS and fault injection are configured per route (VirtualService),
            # the filters themselves do nothing without that.
            hcm.HttpFilter(name=CORS_FILTER, typed_config=pack(cors_pb2.Cors())),
            hcm.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
            # The router must be last; proxyless gRPC clients reject anything else.
            hcm.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
            ),
        ],
    )
    if sidecar_inbound:
        manager.forward_client_cert_details = hcm.HttpConnectionManager.APPEND_FORWARD
        manager.set_current_client_cert_details.CopyFrom(
            hcm.HttpConnectionManager.SetCurrentClientCertDetails(
                subject=bool_value(True), uri=True, dns=True
            )
        )
    if rds_name is not None:
        manager.rds.CopyFrom(hcm.Rds(config_source=ads_config_source(), route_config_name=rds_name))
    elif route_config is not None:
        manager.route_config.CopyFrom(route_config)
    return lc.Filter(name=HCM_FILTER, typed_config=pack(manager))


def tcp_proxy(stat_prefix: str, cluster: str | Sequence[tuple[str, int]]) -> lc.Filter:
    """To one cluster, or to several by weight (a VirtualService tcp route)."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if isinstance(cluster, str):
        proxy.cluster = cluster
    else:
        for name, weight in cluster:
            proxy.weighted_clusters.clusters.add(name=name, weight=weight)
    return lc.Filter(name=TCP_PROXY_FILTER, typed_config=pack(proxy))


def http_inspector() -> lc.ListenerFilter:
    return lc.ListenerFilter(
        name="envoy.filters.listener.http_inspector",
        typed_config=pack(http_inspector_pb2.HttpInspector()),
    )


def original_dst() -> lc.ListenerFilter:
    return lc.ListenerFilter(
        name="envoy.filters.listener.original_dst",
        typed_config=pack(original_dst_pb2.OriginalDst()),
    )


def tls_inspector() -> lc.ListenerFilter:
    """Reads the SNI of a client hello so filter chains can match on server_names."""
    return lc.ListenerFilter(
        name="envoy.filters.listener.tls_inspector",
        typed_config=pack(tls_inspector_pb2.TlsInspector()),
    )
