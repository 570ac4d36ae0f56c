"""VirtualService tcp[] → where a TCP proxy sends connections: the first route whose port
matches (or that has no port match), one cluster or several with weights."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from istiolite.model.service import Service, ServicePort
from istiolite.model.virtualservice import RouteDestination, VirtualService
from istiolite.networking.guard import guarded, object_name
from istiolite.networking.names import Direction, cluster_name
from istiolite.push.context import PushContext

_ClusterWeight = tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight
# One cluster, or (cluster, weight) pairs.
TcpTarget = str | tuple[tuple[str, int], ...]


def tcp_target(
    ctx: PushContext, service: Service, port: ServicePort, namespace: str | None = None
) -> TcpTarget:
    """For a sidecar in `namespace` (the VirtualServices exported to it)."""
    host = ctx.hostname(service)
    default = cluster_name(Direction.OUTBOUND, port.port, "", host)
    vs = ctx.virtual_service(host, namespace)
    if vs is None:
        return default
    for route in vs.tcp:
        if not route.applies(port.port, "mesh", vs.namespace):
            continue
        # A VirtualService whose route fails to translate is left out: the service's cluster.
        found = guarded_l4_target(ctx, vs, route.route, port.port)
        return default if found is None else found
    return default


def tls_targets(
    ctx: PushContext, service: Service, port: ServicePort, namespace: str | None = None
) -> list[tuple[tuple[str, ...], TcpTarget]]:
    """(SNI names, where to) for the tls[] routes of the service's VirtualService that fit the
    port, in order: unterminated TLS routed by the client hello, as istiod does."""
    vs = ctx.virtual_service(ctx.hostname(service), namespace)
    if vs is None:
        return []
    out = []
    for route in vs.tls:
        for match in route.match:
            if not match.applies_on("mesh", vs.namespace):
                continue  # e.g. the egress gateway's own hop of the istio.io egress pattern
            if match.port is None or match.port == port.port:
                found = guarded_l4_target(ctx, vs, route.route, port.port)
                if found is not None:
                    out.append((match.sni_hosts, found))
    return out


def guarded_l4_target(
    ctx: PushContext, vs: VirtualService, destinations: Sequence[RouteDestination], port: int
) -> TcpTarget | None:
    """`l4_target`, or None (reported, naming the VirtualService) when it fails to translate."""
    return guarded(
        partial(l4_target, ctx, vs, destinations, port),
        object_name("VirtualService", vs),
        dropped=f"its tcp/tls route for port {port}",
    )


def l4_target(
    ctx: PushContext, vs: VirtualService, destinations: Sequence[RouteDestination], port: int
) -> TcpTarget:
    """Where a tcp[] or tls[] route sends a connection that arrived on `port`."""
    picked = [d for d in destinations if d.weight > 0 or len(destinations) == 1]
    targets = []
    for dest in picked:
        dest_host = ctx.resolve_host(dest.destination.host, vs.namespace)
        number = dest.destination.port
        if number is None:
            target = ctx.services_by_host.get(dest_host)
            number = target.ports[0].port if target and len(target.ports) == 1 else port
        name = cluster_name(Direction.OUTBOUND, number, dest.destination.subset, dest_host)
        targets.append((name, dest.weight))
    if len(targets) == 1:
        return targets[0][0]
    for name, weight in targets:
        # Fails here, where the VirtualService is known, rather than in the listener built later.
        _ClusterWeight(name=name, weight=weight)
    return tuple(targets)
