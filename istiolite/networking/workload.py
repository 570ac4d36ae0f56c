"""The proxy's own workload: which ports it serves (the inbound side of a sidecar)."""

from __future__ import annotations

from dataclasses import dataclass

from istiolite.model.protocol import Protocol
from istiolite.model.proxy import Proxy
from istiolite.push.context import PushContext


@dataclass(frozen=True, slots=True)
class InboundPort:
    target_port: int
    protocol: Protocol


def inbound_ports(ctx: PushContext, proxy: Proxy) -> list[InboundPort]:
    """Target ports of the Services that select this proxy's labels, one entry per port number.

    A named targetPort is resolved against the proxy's Pod; when the Pod is unknown it is skipped.
    When two services disagree on a port's protocol, the first (by hostname) wins, as in istiod.
    """
    pod = ctx.pods.get((proxy.namespace, proxy.pod_name))
    labels = proxy.labels or (pod.meta.labels if pod else {})
    found: dict[int, InboundPort] = {}
    for service in ctx.services_selecting(proxy.namespace, labels):
        for port in service.ports:
            if port.protocol == Protocol.UDP:
                continue
            target = port.target_port
            if isinstance(target, str):
                resolved = pod.port_by_name(target) if pod else None
                if resolved is None:
                    continue
                target = resolved
            found.setdefault(target, InboundPort(target, port.protocol))
    return [found[p] for p in sorted(found)]
