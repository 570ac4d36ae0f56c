"""Sidecar LDS: outbound listeners per port, virtualOutbound (15001), virtualInbound (15006)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from istiolite.model.protocol import Protocol
from istiolite.model.proxy import InterceptionMode, Proxy
from istiolite.model.service import Service, ServicePort
from istiolite.networking.filters import (
    SNIFFED_HTTP_PROTOCOLS,
    http_connection_manager,
    http_inspector,
    original_dst,
    tcp_proxy,
)
from istiolite.networking.names import (
    BLACKHOLE_CLUSTER,
    INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER,
    VIRTUAL_INBOUND,
    VIRTUAL_INBOUND_PORT,
    VIRTUAL_OUTBOUND,
    VIRTUAL_OUTBOUND_PORT,
    Direction,
    cluster_name,
    listener_name,
    route_name,
)
from istiolite.networking.route import route_to_cluster
from istiolite.networking.tcp_route import TcpTarget, tcp_target
from istiolite.networking.typed import bool_value, socket_address, uint32
from istiolite.networking.workload import InboundPort, inbound_ports
from istiolite.push.context import PushContext

Listener = listener_pb2.Listener
WILDCARD_IP = "0.0.0.0"
LOOPBACK_IP = "127.0.0.1"


def _chain_http_or_tcp(
    name: str, port: int, stat_prefix: str, tcp_cluster: TcpTarget | None
) -> tuple[list[lc.FilterChain], lc.FilterChain | None]:
    """Sniffed port: HTTP clients get the port's routes, anything else the TCP cluster."""
    http_chain = lc.FilterChain(
        name=f"{name}-http",
        filter_chain_match=lc.FilterChainMatch(application_protocols=SNIFFED_HTTP_PROTOCOLS),
        filters=[http_connection_manager(stat_prefix, rds_name=route_name(port))],
    )
    if tcp_cluster is None:
        return [http_chain], None
    return [http_chain], lc.FilterChain(
        name=f"{name}-tcp", filters=[tcp_proxy(stat_prefix, tcp_cluster)]
    )


def _outbound_listener(
    address: str, port: int, *, bind: bool, http: bool, tcp_cluster: TcpTarget | None
) -> Listener:
    """One outbound listener: HTTP routes, a TCP proxy, or both behind protocol sniffing."""
    name = listener_name(address, port)
    stat_prefix = f"outbound_{name}"
    listener = Listener(
        name=name,
        address=socket_address(address, port),
        traffic_direction=base_pb2.OUTBOUND,
    )
    if not bind:
        listener.bind_to_port.CopyFrom(bool_value(False))
    if http and tcp_cluster is not None:
        chains, default = _chain_http_or_tcp(name, port, stat_prefix, tcp_cluster)
        listener.listener_filters.append(http_inspector())
        listener.filter_chains.extend(chains)
        if default is not None:
            listener.default_filter_chain.CopyFrom(default)
    elif http:
        listener.filter_chains.append(
            lc.FilterChain(
                filters=[http_connection_manager(stat_prefix, rds_name=route_name(port))]
            )
        )
    elif tcp_cluster is not None:
        listener.filter_chains.append(lc.FilterChain(filters=[tcp_proxy(stat_prefix, tcp_cluster)]))
    return listener


def _is_tcp_like(port: ServicePort) -> bool:
    return not port.protocol.is_http and port.protocol != Protocol.UDP


def _outbound_cluster(ctx: PushContext, service: Service, port: ServicePort) -> TcpTarget:
    return tcp_target(ctx, service, port)


def outbound_listeners_redirect(ctx: PushContext, services: Sequence[Service]) -> list[Listener]:
    """As istiod with iptables capture: nothing binds; virtualOutbound hands connections over."""
    listeners: dict[str, Listener] = {}
    http_port_numbers = sorted({p.port for s in services for p in s.ports if p.protocol.is_http})
    for port in http_port_numbers:
        listener = _outbound_listener(WILDCARD_IP, port, bind=False, http=True, tcp_cluster=None)
        listeners[listener.name] = listener
    for service in services:
        for port in service.ports:
            if not _is_tcp_like(port):
                continue
            sniff = port.protocol == Protocol.AUTO
            cluster = _outbound_cluster(ctx, service, port)
            if service.headless:
                # Clients dial pod IPs directly; a listener per endpoint catches them.
                targets = [(ep.address, ep.port) for ep in ctx.endpoints(service, port)]
            elif service.cluster_ip:
                targets = [(service.cluster_ip, port.port)]
            else:
                targets = []
            for address, number in targets:
                name = listener_name(address, number)
                if name in listeners:
                    continue  # first service (by hostname) keeps a contested address
                listeners[name] = _outbound_listener(
                    address, number, bind=False, http=sniff, tcp_cluster=cluster
                )
    return [listeners[n] for n in sorted(listeners)]


def outbound_listeners_no_capture(ctx: PushContext, services: Sequence[Service]) -> list[Listener]:
    """No iptables: bind 127.0.0.1:<service port>; the Host header picks the HTTP service."""
    by_port: dict[int, list[tuple[Service, ServicePort]]] = defaultdict(list)
    for service in services:
        if service.headless:
            continue
        for port in service.ports:
            if port.protocol != Protocol.UDP:
                by_port[port.port].append((service, port))
    listeners = []
    for number, members in sorted(by_port.items()):
        http = any(p.protocol.is_http or p.protocol == Protocol.AUTO for _, p in members)
        tcp_members = [(s, p) for s, p in members if _is_tcp_like(p)]
        # One bound port can only proxy raw TCP to one service: the first by hostname.
        tcp_cluster = _outbound_cluster(ctx, *tcp_members[0]) if tcp_members else None
        listeners.append(
            _outbound_listener(LOOPBACK_IP, number, bind=True, http=http, tcp_cluster=tcp_cluster)
        )
    return listeners


def virtual_outbound(registry_only: bool = False) -> Listener:
    # REGISTRY_ONLY: what is not in the registry goes nowhere.
    catchall = BLACKHOLE_CLUSTER if registry_only else PASSTHROUGH_CLUSTER
    return Listener(
        name=VIRTUAL_OUTBOUND,
        address=socket_address(WILDCARD_IP, VIRTUAL_OUTBOUND_PORT),
        use_original_dst=bool_value(True),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[
            lc.FilterChain(
                name="virtualOutbound-blackhole",
                filter_chain_match=lc.FilterChainMatch(
                    destination_port=uint32(VIRTUAL_OUTBOUND_PORT)
                ),
                filters=[tcp_proxy(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
            ),
            lc.FilterChain(
                name="virtualOutbound-catchall-tcp",
                filters=[tcp_proxy(catchall, catchall)],
            ),
        ],
    )


def _inbound_route(port: InboundPort) -> route_pb2.RouteConfiguration:
    cluster = cluster_name(Direction.INBOUND, port.target_port)
    return route_pb2.RouteConfiguration(
        name=cluster,
        validate_clusters={"value": False},
        virtual_hosts=[
            rc.VirtualHost(
                name=f"inbound|http|{port.target_port}",
                domains=["*"],
                routes=[route_to_cluster(cluster)],
            )
        ],
    )


def _inbound_chains(port: InboundPort) -> list[lc.FilterChain]:
    name = listener_name(WILDCARD_IP, port.target_port)
    stat_prefix = f"inbound_{name}"
    cluster = cluster_name(Direction.INBOUND, port.target_port)
    on_port = uint32(port.target_port)
    http_filter = http_connection_manager(stat_prefix, route_config=_inbound_route(port))
    if port.protocol.is_http:
        return [
            lc.FilterChain(
                name=name,
                filter_chain_match=lc.FilterChainMatch(destination_port=on_port),
                filters=[http_filter],
            )
        ]
    chains = []
    if port.protocol == Protocol.AUTO:
        chains.append(
            lc.FilterChain(
                name=f"{name}-http",
                filter_chain_match=lc.FilterChainMatch(
                    destination_port=on_port, application_protocols=SNIFFED_HTTP_PROTOCOLS
                ),
                filters=[http_filter],
            )
        )
    chains.append(
        lc.FilterChain(
            name=name,
            filter_chain_match=lc.FilterChainMatch(destination_port=on_port),
            filters=[tcp_proxy(stat_prefix, cluster)],
        )
    )
    return chains


def virtual_inbound(ports: Sequence[InboundPort]) -> Listener:
    chains = [
        lc.FilterChain(
            # Traffic addressed to 15006 itself would loop forever.
            name="virtualInbound-blackhole",
            filter_chain_match=lc.FilterChainMatch(destination_port=uint32(VIRTUAL_INBOUND_PORT)),
            filters=[tcp_proxy(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
        )
    ]
    for port in ports:
        chains.extend(_inbound_chains(port))
    listener = Listener(
        name=VIRTUAL_INBOUND,
        address=socket_address(WILDCARD_IP, VIRTUAL_INBOUND_PORT),
        traffic_direction=base_pb2.INBOUND,
        listener_filters=[original_dst()],
        filter_chains=chains,
        default_filter_chain=lc.FilterChain(
            name="virtualInbound-catchall-tcp",
            filters=[tcp_proxy(INBOUND_PASSTHROUGH_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER)],
        ),
    )
    if any(p.protocol == Protocol.AUTO for p in ports):
        listener.listener_filters.append(http_inspector())
    return listener


def sidecar_listeners(
    ctx: PushContext,
    proxy: Proxy,
    services: Sequence[Service] | None = None,
    registry_only: bool = False,
) -> list[Listener]:
    visible = ctx.services if services is None else services
    if proxy.interception_mode == InterceptionMode.NONE:
        return outbound_listeners_no_capture(ctx, visible)
    listeners = outbound_listeners_redirect(ctx, visible)
    listeners.append(virtual_outbound(registry_only))
    listeners.append(virtual_inbound(inbound_ports(ctx, proxy)))
    return sorted(listeners, key=lambda item: item.name)
