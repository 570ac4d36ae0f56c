"""VirtualService tcp[] → where a TCP proxy sends connections: the first route whose port
matches (or that has no port match), one cluster or several with weights."""

from __future__ import annotations

from istiolite.model.service import Service, ServicePort
from istiolite.networking.names import Direction, cluster_name
from istiolite.push.context import PushContext

# One cluster, or (cluster, weight) pairs.
TcpTarget = str | tuple[tuple[str, int], ...]


def tcp_target(ctx: PushContext, service: Service, port: ServicePort) -> TcpTarget:
    host = ctx.hostname(service)
    default = cluster_name(Direction.OUTBOUND, port.port, "", host)
    vs = ctx.virtual_services.get(host)
    if vs is None:
        return default
    for route in vs.tcp:
        if route.ports and port.port not in route.ports:
            continue
        picked = [d for d in route.route if d.weight > 0 or len(route.route) == 1]
        targets = []
        for dest in picked:
            dest_host = ctx.resolve_host(dest.destination.host, vs.namespace)
            number = dest.destination.port
            if number is None:
                target = ctx.services_by_host.get(dest_host)
                number = target.ports[0].port if target and len(target.ports) == 1 else port.port
            name = cluster_name(Direction.OUTBOUND, number, dest.destination.subset, dest_host)
            targets.append((name, dest.weight))
        if len(targets) == 1:
            return targets[0][0]
        return tuple(targets)
    return default
