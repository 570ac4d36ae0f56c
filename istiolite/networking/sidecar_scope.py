"""A proxy's Sidecar applied to the registry, as istiod's SidecarScope: the services each egress
listener imports (and so the listeners, routes and clusters the proxy gets), and the clusters of
its ingress listeners.

Egress listeners are taken in order. One with a `port` gets only that port: its hosts' services
that have the port, on a listener at `bind` (or, with iptables, where the services' own
addresses are). The listener without a port (at most one, last) covers every other port with
its hosts. Without a Sidecar, or without egress, one catch-all listener imports every service.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2

from istiolite.model.proxy import InterceptionMode, Proxy
from istiolite.model.service import Service
from istiolite.model.sidecar import UNIX_PREFIX, EgressListener, Sidecar, SidecarPort, host_matches
from istiolite.model.validation import MAX_DURATION_SECONDS
from istiolite.model.virtualservice import VirtualService
from istiolite.networking.cluster import Cluster, inbound_cluster
from istiolite.networking.names import INBOUND_PASSTHROUGH_BIND_IP
from istiolite.networking.traffic_policy import apply_connection_pool
from istiolite.networking.workload import LOOPBACK_IP, InboundPort
from istiolite.push.cache import memoized
from istiolite.push.context import PushContext

# "Never": the longest duration Envoy accepts (the Duration maximum, 315576000000 s, is refused).
_MAX_DURATION_SECONDS = MAX_DURATION_SECONDS


@dataclass(frozen=True, slots=True)
class EgressScope:
    """One egress listener, resolved for a proxy."""

    port: SidecarPort | None  # None: the catch-all listener
    bind: str  # the listener address; "" = where each service is (0.0.0.0 or its VIP)
    bind_to_port: bool  # a real listener (no iptables hands connections to it)
    services: tuple[Service, ...]  # with a port: trimmed to that one port


def _trimmed(service: Service, number: int) -> Service | None:
    """The service with only the given port, or None when it has no such port."""
    for port in service.ports:
        if port.port == number:
            if len(service.ports) == 1:
                return service
            return dataclasses.replace(service, ports=(port,))
    return None


def _needs_port_match(listener: EgressListener) -> bool:
    return (
        listener.port is not None
        and listener.port.number != 0
        and listener.port.protocol != "HTTP_PROXY"
    )


def _imported(ctx: PushContext, listener: EgressListener, namespace: str) -> tuple[Service, ...]:
    out = []
    for service in ctx.services_for(namespace):  # only what is exported to it (exportTo)
        if not listener.imports(service.namespace, ctx.hostname(service), namespace):
            continue
        if _needs_port_match(listener):
            assert listener.port is not None
            trimmed = _trimmed(service, listener.port.number)
            if trimmed is not None:
                out.append(trimmed)
        else:
            out.append(service)
    return tuple(out)


def _listeners(sidecar: Sidecar | None) -> tuple[EgressListener, ...]:
    if sidecar is None or not sidecar.egress:
        return (EgressListener(hosts=(("*", "*"),)),)
    return sidecar.egress


def egress_scopes(
    ctx: PushContext, proxy: Proxy, sidecar: Sidecar | None
) -> tuple[EgressScope, ...]:
    """The proxy's egress listeners with their services (memoized per push)."""
    # `.` in hosts is the proxy's namespace (a root-namespace Sidecar applies to others too).
    namespace = proxy.namespace
    key = (
        "egress-scopes",
        (sidecar.namespace, sidecar.meta.name) if sidecar else None,
        namespace if sidecar is not None and sidecar.egress else ctx.scope_key(namespace),
        proxy.interception_mode,
    )
    return memoized(key, lambda: _egress_scopes(ctx, proxy, sidecar))


def _egress_scopes(
    ctx: PushContext, proxy: Proxy, sidecar: Sidecar | None
) -> tuple[EgressScope, ...]:
    namespace = proxy.namespace
    scopes = []
    no_iptables = proxy.interception_mode == InterceptionMode.NONE
    for listener in _listeners(sidecar):
        # As istiod: without iptables every listener binds; else captureMode NONE (or a unix
        # domain socket) asks for a real listener, and the others are iptables targets.
        bind_to_port = (
            no_iptables or listener.capture_mode == "NONE" or listener.bind.startswith(UNIX_PREFIX)
        )
        bind = listener.bind or (LOOPBACK_IP if bind_to_port else "")
        if sidecar is None or not sidecar.egress:
            services = ctx.services_for(namespace)
        else:
            services = _imported(ctx, listener, namespace)
        scopes.append(EgressScope(listener.port, bind, bind_to_port, services))
    return tuple(scopes)


def _destination_hosts(vs: VirtualService) -> Iterator[str]:
    for http in vs.http:
        for dest in http.route:
            yield dest.destination.host
        for mirror in http.mirrors:
            yield mirror.destination.host
    for tcp in vs.tcp:
        for dest in tcp.route:
            yield dest.destination.host


def _vs_selected(vs: VirtualService, ctx: PushContext, listener: EgressListener, ns: str) -> bool:
    for raw in vs.hosts:
        host = ctx.resolve_host(raw, vs.namespace)
        for pattern_ns, pattern in listener.hosts:
            owner = ns if pattern_ns == "." else pattern_ns
            if owner not in ("*", vs.namespace):
                continue
            if host_matches(host, pattern) or host_matches(pattern, host):
                return True
    return False


def egress_services(
    ctx: PushContext, namespace: str, sidecar: Sidecar | None
) -> tuple[Service, ...]:
    """Every service the proxy gets clusters for: what its egress listeners import, plus the
    destinations of the VirtualServices they import (istiod infers those, so a route never
    points at a cluster the proxy lacks). Ports of one service imported by several listeners
    are merged; first come, first kept."""
    if sidecar is None or not sidecar.egress:
        return ctx.services_for(namespace)
    config_ns = namespace
    key = ("egress-services", sidecar.namespace, sidecar.meta.name, config_ns)
    return memoized(key, lambda: _egress_services(ctx, config_ns, sidecar))


def _egress_services(ctx: PushContext, config_ns: str, sidecar: Sidecar) -> tuple[Service, ...]:
    merged: dict[str, Service] = {}

    def add(service: Service) -> None:
        host = ctx.hostname(service)
        have = merged.get(host)
        if have is None:
            merged[host] = service
            return
        numbers = {p.port for p in have.ports}
        extra = tuple(p for p in service.ports if p.port not in numbers)
        if extra:
            merged[host] = dataclasses.replace(have, ports=have.ports + extra)

    # The VirtualServices exported to the namespace (istiod: VirtualServicesForGateway for
    # "mesh"); a destination counts only when its service is exported there too.
    virtual_services = ctx.mesh_virtual_services(config_ns)
    for listener in sidecar.egress:
        for service in _imported(ctx, listener, config_ns):
            add(service)
        for vs in virtual_services:
            if not _vs_selected(vs, ctx, listener, config_ns):
                continue
            for raw in _destination_hosts(vs):
                target = ctx.services_by_host.get(ctx.resolve_host(raw, vs.namespace))
                if target is None or not ctx.is_visible(target, config_ns):
                    continue
                if _needs_port_match(listener):
                    assert listener.port is not None
                    target = _trimmed(target, listener.port.number)
                if target is not None:
                    add(target)
    # The registry's order (by hostname), each service's ports in their own order.
    return tuple(_in_registry_order(ctx, s) for _, s in sorted(merged.items()))


def _in_registry_order(ctx: PushContext, service: Service) -> Service:
    original = ctx.services_by_host[ctx.hostname(service)]
    ports = tuple(p for p in original.ports if p in service.ports)
    return service if ports == service.ports else dataclasses.replace(service, ports=ports)


# --- ingress ------------------------------------------------------------------------------------


def inbound_cluster_for(port: InboundPort) -> Cluster:
    """`inbound|<port>||`: for a Service port, to 127.0.0.1:<target port>; for a Sidecar ingress
    listener, to its defaultEndpoint (a socket, the pod IP, loopback) or, without one, to the
    original destination; with the Sidecar's connection pool."""
    cluster = inbound_cluster(port)
    if not port.from_sidecar:
        return cluster
    del cluster.load_assignment.endpoints[:]
    if not port.endpoint:
        cluster.ClearField("load_assignment")
        cluster.type = Cluster.ORIGINAL_DST
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
        cluster.cleanup_interval.seconds = _MAX_DURATION_SECONDS
    else:
        if port.endpoint.startswith(UNIX_PREFIX):
            address = address_pb2.Address(
                pipe=address_pb2.Pipe(path=port.endpoint[len(UNIX_PREFIX) :])
            )
        else:
            address = address_pb2.Address(
                socket_address=address_pb2.SocketAddress(
                    address=port.endpoint, port_value=port.endpoint_port or port.target_port
                )
            )
        cluster.load_assignment.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(address=address)
                    )
                ]
            )
        )
    if port.endpoint not in (LOOPBACK_IP, "::1") and not port.endpoint.startswith(UNIX_PREFIX):
        # Traffic to the pod IP (or onward) leaves from 127.0.0.6, which iptables lets through
        # instead of capturing it again.
        cluster.upstream_bind_config.source_address.CopyFrom(
            address_pb2.SocketAddress(address=INBOUND_PASSTHROUGH_BIND_IP, port_value=0)
        )
    if port.connection_pool is not None:
        apply_connection_pool(cluster, port.connection_pool, port.protocol)
    return cluster
