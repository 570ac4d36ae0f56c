"""VirtualService tcp[] → where a TCP proxy sends connections: the first route whose port
matches (or that has no port match), one cluster or several with weights."""

from __future__ import annotations

from collections.abc import Sequence

from istiolite.model.service import Service, ServicePort
from istiolite.model.virtualservice import RouteDestination, VirtualService
from istiolite.networking.names import Direction, cluster_name
from istiolite.push.context import PushContext

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
        if route.ports and port.port not in route.ports:
            continue
        return l4_target(ctx, vs, route.route, port.port)
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
            if match.port is None or match.port == port.port:
                out.append((match.sni_hosts, l4_target(ctx, vs, route.route, port.port)))
    return out


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
    return tuple(targets)
