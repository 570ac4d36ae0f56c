"""The proxy's own workload: which ports it serves (the inbound side of a sidecar)."""

from __future__ import annotations

from dataclasses import dataclass

from istiolite.model.protocol import Protocol
from istiolite.model.proxy import Proxy
from istiolite.model.service import Service
from istiolite.model.workload import Pod
from istiolite.push.context import PushContext


@dataclass(frozen=True, slots=True)
class InboundPort:
    target_port: int
    protocol: Protocol


def inbound_ports(ctx: PushContext, proxy: Proxy) -> tuple[InboundPort, ...]:
    """Target ports of the Services that select this proxy's labels, one entry per port number.

    A named targetPort is resolved against the proxy's Pod; when the Pod is unknown it is skipped.
    When two services disagree on a port's protocol, the first (by hostname) wins, as in istiod.
    Memoized per push: by namespace and labels, and by pod only where a named port needs it.
    """
    pod = ctx.pods.get((proxy.namespace, proxy.pod_name))
    labels = proxy.labels or (pod.meta.labels if pod else {})
    shape = (proxy.namespace, frozenset(labels.items()))
    selecting_key = ("inbound-services", *shape)
    services: list[Service] | None = ctx.cache.get(selecting_key)
    if services is None:
        services = ctx.services_selecting(proxy.namespace, labels)
        ctx.cache[selecting_key] = services
    named = any(isinstance(p.target_port, str) for s in services for p in s.ports)
    key = ("inbound-ports", *shape, proxy.pod_name if named else "")
    found: tuple[InboundPort, ...] | None = ctx.cache.get(key)
    if found is None:
        found = _resolve(services, pod)
        ctx.cache[key] = found
    return found


def _resolve(services: list[Service], pod: Pod | None) -> tuple[InboundPort, ...]:
    found: dict[int, InboundPort] = {}
    for service in services:
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
    return tuple(found[p] for p in sorted(found))
