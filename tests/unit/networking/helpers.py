"""Proxies and decoded generator output for the networking tests."""

from __future__ import annotations

from typing import Any, TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import message

from istiolite import type_urls
from istiolite.model.proxy import Proxy, parse_proxy
from istiolite.networking import generator
from istiolite.push.context import PushContext

M = TypeVar("M", bound=message.Message)

Cluster = cluster_pb2.Cluster
ClusterLoadAssignment = endpoint_pb2.ClusterLoadAssignment
Listener = listener_pb2.Listener
RouteConfiguration = route_pb2.RouteConfiguration
FilterChain = listener_components_pb2.FilterChain


def sidecar(
    namespace: str = "default",
    pod: str = "client",
    *,
    ip: str = "10.1.0.99",
    labels: dict[str, str] | None = None,
    mode: str | None = None,
) -> Proxy:
    metadata: dict[str, Any] = {}
    if labels is not None:
        metadata["LABELS"] = labels
    if mode is not None:
        metadata["INTERCEPTION_MODE"] = mode
    return parse_proxy(f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local", metadata)


def router(namespace: str = "istio-system", pod: str = "ingress") -> Proxy:
    return parse_proxy(
        f"router~10.1.0.200~{pod}.{namespace}~{namespace}.svc.cluster.local",
        {"LABELS": {"istio": "ingressgateway"}},
    )


def _decode(ctx: PushContext, proxy: Proxy, type_url: str, cls: type[M]) -> dict[str, M]:
    resources = generator.generate(ctx, proxy, type_url)
    decoded = {name: cls.FromString(r.payload) for name, r in resources.items()}
    for name, r in resources.items():
        assert r.name == name and r.type_url == type_url
    return decoded


def clusters(ctx: PushContext, proxy: Proxy) -> dict[str, Cluster]:
    return _decode(ctx, proxy, type_urls.CLUSTER, Cluster)


def load_assignments(ctx: PushContext, proxy: Proxy) -> dict[str, ClusterLoadAssignment]:
    return _decode(ctx, proxy, type_urls.ENDPOINT, ClusterLoadAssignment)


def listeners(ctx: PushContext, proxy: Proxy) -> dict[str, Listener]:
    return _decode(ctx, proxy, type_urls.LISTENER, Listener)


def routes(ctx: PushContext, proxy: Proxy) -> dict[str, RouteConfiguration]:
    return _decode(ctx, proxy, type_urls.ROUTE, RouteConfiguration)


def endpoint_addresses(cla: ClusterLoadAssignment) -> list[tuple[str, int]]:
    return [
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
        for group in cla.endpoints
        for lb in group.lb_endpoints
    ]


def http_manager(chain: FilterChain) -> hcm.HttpConnectionManager | None:
    for f in chain.filters:
        if f.typed_config.Is(hcm.HttpConnectionManager.DESCRIPTOR):
            manager = hcm.HttpConnectionManager()
            f.typed_config.Unpack(manager)
            return manager
    return None


def tcp_proxy(chain: FilterChain) -> tcp_proxy_pb2.TcpProxy | None:
    for f in chain.filters:
        if f.typed_config.Is(tcp_proxy_pb2.TcpProxy.DESCRIPTOR):
            proxy = tcp_proxy_pb2.TcpProxy()
            f.typed_config.Unpack(proxy)
            return proxy
    return None


def all_chains(listener: Listener) -> list[FilterChain]:
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    return chains
