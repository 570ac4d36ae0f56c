"""Sidecar LDS: outbound listeners per egress listener and port, virtualOutbound (15001),
virtualInbound (15006), and listeners of their own for Sidecar ingress ports that bind.

Outbound, as istiod's buildSidecarOutboundListeners: each egress listener's services, in order,
land on a listener keyed by address and port. An HTTP port shares `0.0.0.0_<port>` (its routes
tell the services apart); a TCP port listens on the service's address (its cluster IP, one per
endpoint for a headless service, 0.0.0.0 with a CIDR match for an address range). With a `bind`
(an egress `bind`, or 127.0.0.1 when the listener must bind a real port) every service of the
port shares `<bind>_<port>`. Where HTTP and TCP meet on one listener the protocol is sniffed.
Ports claimed by an egress listener with a `port` are closed to the catch-all listener.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from istiolite.model.peerauthentication import MtlsMode
from istiolite.model.protocol import Protocol
from istiolite.model.proxy import InterceptionMode, Proxy
from istiolite.model.service import Service, ServicePort
from istiolite.model.serviceentry import is_partial_wildcard
from istiolite.model.sidecar import HTTP_PROXY, Sidecar
from istiolite.networking.filters import (
    SNIFFED_HTTP_PROTOCOLS,
    http_connection_manager,
    http_inspector,
    original_dst,
    tcp_proxy,
    tls_inspector,
)
from istiolite.networking.inbound_mtls import Serve, chain_plans
from istiolite.networking.inbound_policy import NO_POLICY, InboundPolicy, inbound_policy
from istiolite.networking.mtls import istio_mutual_downstream
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
from istiolite.networking.sidecar_scope import EgressScope, egress_scopes
from istiolite.networking.tcp_route import TcpTarget, tcp_target, tls_targets
from istiolite.networking.tls_context import HTTP_ALPN, downstream_tls_context, transport_socket
from istiolite.networking.typed import bool_value, socket_address, uint32
from istiolite.networking.workload import (
    LOOPBACK_IP,
    WILDCARD_IP,
    InboundPort,
    inbound_mtls,
    inbound_ports,
)
from istiolite.push.context import PushContext

Listener: TypeAlias = listener_pb2.Listener
PASSTHROUGH_FILTER_CHAIN = "PassthroughFilterChain"


@dataclass(frozen=True, slots=True)
class InboundMtls:
    """One inbound port's effective PeerAuthentication mode, and whether the proxy holds a
    mesh certificate to terminate mTLS with (networking.inbound_mtls)."""

    mode: MtlsMode
    mesh_mtls: bool


PLAINTEXT = InboundMtls(MtlsMode.DISABLE, False)

__all__ = ["LOOPBACK_IP", "WILDCARD_IP", "Listener", "sidecar_listeners"]


# --- outbound -----------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One outbound listener being assembled."""

    address: str
    port: int
    bind_to_port: bool
    http: bool = False  # an HTTP chain (with the port's routes)
    # (CIDR or "" for every address, where the TCP proxy sends); the first of a CIDR wins.
    tcp: list[tuple[str, TcpTarget]] = field(default_factory=list)
    # (SNI names, where to): VirtualService tls[] routes on a TLS port, matched by client hello.
    sni: list[tuple[tuple[str, ...], TcpTarget]] = field(default_factory=list)
    locked: bool = False  # claimed by an egress listener with a port
    # Connections no SNI chain takes go where they would without this listener (a listener
    # for TLS services without an address: it must not capture the port's other traffic).
    sni_fallthrough: bool = False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class _Outbound:
    def __init__(self, ctx: PushContext, namespace: str | None = None) -> None:
        self.ctx = ctx
        self.namespace = namespace  # the proxy's: which VirtualServices apply (exportTo)
        self.entries: dict[tuple[str, int], _Entry] = {}

    def _targets(
        self, scope: EgressScope, service: Service, port: ServicePort, number: int, http: bool
    ) -> list[tuple[str, int, str]]:
        """(address, port, CIDR match) of the listeners this service port lands on."""
        if scope.bind:
            if service.headless and scope.bind_to_port:
                # Without interception a client reaches headless pods directly, not through us.
                return []
            return [(scope.bind, number, "")]
        if http:
            return [(WILDCARD_IP, number, "")]
        if service.headless:
            # Clients dial pod IPs directly; a listener per endpoint catches them.
            return [(ep.address, ep.port, "") for ep in self.ctx.endpoints(service, port)]
        addresses = service.addresses or ((service.cluster_ip,) if service.cluster_ip else ())
        if addresses:
            # One listener per address (istiod: a service per address); an address range gets
            # 0.0.0.0 with a filter chain for the range (istiod's CIDR case).
            return [(WILDCARD_IP, number, a) if "/" in a else (a, number, "") for a in addresses]
        if service.type == "ServiceEntry" and service.resolution == "NONE":
            # As istiod for resolution NONE without addresses: a listener per endpoint IP, or
            # with none, 0.0.0.0:<port> to the original destination.
            endpoints = [e for e in self.ctx.endpoints(service, port) if _is_ip(e.address)]
            if not endpoints:
                return [(WILDCARD_IP, number, "")]
            return [(e.address, number, "") for e in endpoints]
        # TCP without an address to listen on (a ServiceEntry without `addresses`, resolution
        # DNS or STATIC): istiod would put it on 0.0.0.0:<port>, catching every connection to
        # that port, whatever its destination. Rather none: such traffic is passed through.
        # (TLS is the exception, see `add`: its client hello names the host.)
        return []

    def _add_sni_only(self, service: Service, port: ServicePort, number: int) -> None:
        """A TLS or HTTPS ServiceEntry without addresses, as istiod: `0.0.0.0_<port>` with a
        chain per SNI name (the VirtualService's tls[] routes first, then the host itself);
        other connections fall through to where they would go without it."""
        key = (WILDCARD_IP, number)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = _Entry(WILDCARD_IP, number, False, sni_fallthrough=True)
        elif entry.locked:
            return
        entry.sni.extend(tls_targets(self.ctx, service, port, self.namespace))
        host = self.ctx.hostname(service)
        if not is_partial_wildcard(host):  # Envoy's server_names take `*.` wildcards only
            entry.sni.append(((host,), tcp_target(self.ctx, service, port, self.namespace)))

    def add(
        self,
        scope: EgressScope,
        service: Service,
        port: ServicePort,
        number: int,
        protocol: Protocol,
    ) -> None:
        if protocol == Protocol.UDP:
            return
        http = protocol.is_http or protocol == Protocol.AUTO
        tcp = not protocol.is_http
        targets = self._targets(scope, service, port, number, protocol.is_http)
        if (
            not targets
            and protocol in (Protocol.TLS, Protocol.HTTPS)
            and service.type == "ServiceEntry"
            and not scope.bind
        ):
            self._add_sni_only(service, port, number)
            return
        for address, listen_port, cidr in targets:
            key = (address, listen_port)
            entry = self.entries.get(key)
            if entry is None:
                entry = self.entries[key] = _Entry(address, listen_port, scope.bind_to_port)
            elif entry.locked:
                continue
            entry.http = entry.http or http
            if tcp and all(c != cidr for c, _ in entry.tcp):
                entry.tcp.append((cidr, tcp_target(self.ctx, service, port, self.namespace)))
            if protocol in (Protocol.TLS, Protocol.HTTPS) and not cidr:
                entry.sni.extend(tls_targets(self.ctx, service, port, self.namespace))

    def build(self, scopes: Sequence[EgressScope]) -> None:
        for scope in scopes:
            if scope.port is None:
                for entry in self.entries.values():
                    entry.locked = True
                for service in scope.services:
                    for port in service.ports:
                        self.add(scope, service, port, port.port, port.protocol)
            elif scope.port.number and scope.port.protocol != HTTP_PROXY:
                # The listener's own protocol decides; its services are trimmed to the port.
                protocol = scope.port.app_protocol
                for service in scope.services:
                    for port in service.ports:
                        self.add(scope, service, port, scope.port.number, protocol)
            # Unix domain sockets and HTTP_PROXY listeners are not translated yet.


def _sniffed_http_chain(name: str, port: int, stat_prefix: str) -> lc.FilterChain:
    return lc.FilterChain(
        name=f"{name}-http",
        filter_chain_match=lc.FilterChainMatch(application_protocols=SNIFFED_HTTP_PROTOCOLS),
        filters=[http_connection_manager(stat_prefix, rds_name=route_name(port))],
    )


def _cidr_match(cidr: str) -> lc.FilterChainMatch:
    network = ipaddress.ip_network(cidr, strict=False)
    return lc.FilterChainMatch(
        prefix_ranges=[
            address_pb2.CidrRange(
                address_prefix=str(network.network_address),
                prefix_len=uint32(network.prefixlen),
            )
        ]
    )


def _add_sni_chains(
    listener: Listener, name: str, routes: Sequence[tuple[tuple[str, ...], TcpTarget]]
) -> None:
    """A filter chain per tls[] match; Envoy refuses two chains for one SNI, so the first
    route naming it wins (as istiod drops duplicates)."""
    listener.listener_filters.append(tls_inspector())
    taken: set[str] = set()
    for snis, target in routes:
        fresh = [s for s in snis if s not in taken]
        if not fresh:
            continue
        taken.update(fresh)
        stat_prefix = target if isinstance(target, str) else target[0][0]
        listener.filter_chains.append(
            lc.FilterChain(
                name=f"{name}-sni-{fresh[0]}",
                filter_chain_match=lc.FilterChainMatch(server_names=fresh),
                filters=[tcp_proxy(stat_prefix, target)],
            )
        )


def _outbound_listener(entry: _Entry, registry_only: bool) -> Listener:
    """One outbound listener: HTTP routes, a TCP proxy, or both behind protocol sniffing."""
    name = listener_name(entry.address, entry.port)
    stat_prefix = f"outbound_{name}"
    listener = Listener(
        name=name,
        address=socket_address(entry.address, entry.port),
        traffic_direction=base_pb2.OUTBOUND,
    )
    if not entry.bind_to_port:
        listener.bind_to_port.CopyFrom(bool_value(False))
    match_all = next((target for cidr, target in entry.tcp if not cidr), None)
    ranged = [(cidr, target) for cidr, target in entry.tcp if cidr]
    if entry.sni and not ranged and not entry.http:
        _add_sni_chains(listener, name, entry.sni)
        if match_all is not None:
            # Anything else (another or no SNI) keeps going to the service itself.
            listener.default_filter_chain.CopyFrom(
                lc.FilterChain(name=f"{name}-tcp", filters=[tcp_proxy(stat_prefix, match_all)])
            )
        elif entry.sni_fallthrough:
            listener.default_filter_chain.CopyFrom(_passthrough_chain(registry_only))
        return listener
    if not ranged:
        if entry.http and match_all is not None:
            # Sniffed: HTTP clients get the port's routes, anything else the TCP cluster.
            listener.listener_filters.append(http_inspector())
            listener.filter_chains.append(_sniffed_http_chain(name, entry.port, stat_prefix))
            listener.default_filter_chain.CopyFrom(
                lc.FilterChain(name=f"{name}-tcp", filters=[tcp_proxy(stat_prefix, match_all)])
            )
        elif entry.http:
            listener.filter_chains.append(
                lc.FilterChain(
                    filters=[http_connection_manager(stat_prefix, rds_name=route_name(entry.port))]
                )
            )
        elif match_all is not None:
            listener.filter_chains.append(
                lc.FilterChain(filters=[tcp_proxy(stat_prefix, match_all)])
            )
        return listener
    if entry.http:
        listener.listener_filters.append(http_inspector())
        listener.filter_chains.append(_sniffed_http_chain(name, entry.port, stat_prefix))
    for cidr, target in ranged:
        listener.filter_chains.append(
            lc.FilterChain(
                name=f"{name}-{cidr}",
                filter_chain_match=_cidr_match(cidr),
                filters=[tcp_proxy(stat_prefix, target)],
            )
        )
    if match_all is not None:
        default = lc.FilterChain(name=f"{name}-tcp", filters=[tcp_proxy(stat_prefix, match_all)])
    else:
        # Addresses outside the ranges go where they would without this listener.
        default = _passthrough_chain(registry_only)
    listener.default_filter_chain.CopyFrom(default)
    return listener


def _passthrough_chain(registry_only: bool) -> lc.FilterChain:
    catchall = BLACKHOLE_CLUSTER if registry_only else PASSTHROUGH_CLUSTER
    return lc.FilterChain(name=PASSTHROUGH_FILTER_CHAIN, filters=[tcp_proxy(catchall, catchall)])


def outbound_listeners(
    ctx: PushContext,
    scopes: Sequence[EgressScope],
    registry_only: bool = False,
    namespace: str | None = None,
) -> list[Listener]:
    builder = _Outbound(ctx, namespace)
    builder.build(scopes)
    built = [
        _outbound_listener(e, registry_only)
        for e in builder.entries.values()
        # An SNI-only listener left with no chain would be refused by Envoy, and route nothing.
        if e.sni or e.tcp or e.http or not e.sni_fallthrough
    ]
    return sorted(built, key=lambda item: item.name)


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


# --- inbound ------------------------------------------------------------------------------------


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


def _inbound_chains(
    port: InboundPort, policy: InboundPolicy, mtls: InboundMtls = PLAINTEXT
) -> list[lc.FilterChain]:
    name = listener_name(port.bind, port.target_port)
    stat_prefix = f"inbound_{name}"
    cluster = cluster_name(Direction.INBOUND, port.target_port)
    on_port = uint32(port.target_port)
    if port.tls is not None:
        # A Sidecar ingress port terminating TLS itself (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, from
        # files): its own TLS replaces mesh mTLS, as istiod. HTTP ALPN only when HTTP is inside,
        # and no version floor.
        plans = chain_plans(port.protocol, MtlsMode.DISABLE, mesh_mtls=False)
        context = downstream_tls_context(
            port.tls,
            alpn=HTTP_ALPN if port.protocol.is_http else (),
            min_version="",
            state_optional_client_certificate=True,
        )
        own_tls: base_pb2.TransportSocket | None = transport_socket(context)
    else:
        plans = chain_plans(port.protocol, mtls.mode, mesh_mtls=mtls.mesh_mtls)
        own_tls = None
    chains = []
    for plan in plans:
        match = lc.FilterChainMatch(
            destination_port=on_port,
            transport_protocol=plan.transport,
            application_protocols=plan.alpn,
        )
        if plan.serve == Serve.HTTP:
            filters = [
                http_connection_manager(
                    stat_prefix,
                    route_config=_inbound_route(port),
                    policy_filters=policy.http_filters,
                    sidecar_inbound=True,
                )
            ]
        elif plan.serve == Serve.TCP:
            filters = [*policy.tcp_filters, tcp_proxy(stat_prefix, cluster)]
        else:
            filters = [tcp_proxy(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)]
        chain = lc.FilterChain(name=name + plan.suffix, filter_chain_match=match, filters=filters)
        if plan.mtls:
            chain.transport_socket.CopyFrom(
                transport_socket(istio_mutual_downstream(http=plan.serve == Serve.HTTP))
            )
        elif own_tls is not None:
            chain.transport_socket.CopyFrom(own_tls)
        chains.append(chain)
    return chains


def _inspectors(chains: Sequence[lc.FilterChain], sniffed: bool) -> list[lc.ListenerFilter]:
    """TLS inspector where a chain matches TLS, then HTTP inspector for sniffed ports."""
    found = []
    if any(c.filter_chain_match.transport_protocol for c in chains):
        found.append(tls_inspector())
    if sniffed:
        found.append(http_inspector())
    return found


def virtual_inbound(
    ports: Sequence[InboundPort],
    policy: Callable[[int], InboundPolicy] = lambda _: NO_POLICY,
    mtls: Callable[[int], InboundMtls] = lambda _: PLAINTEXT,
) -> Listener:
    chains = [
        lc.FilterChain(
            # Traffic addressed to 15006 itself would loop forever.
            name="virtualInbound-blackhole",
            filter_chain_match=lc.FilterChainMatch(destination_port=uint32(VIRTUAL_INBOUND_PORT)),
            filters=[tcp_proxy(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
        )
    ]
    captured = [p for p in ports if not p.bind_to_port]
    for port in captured:
        chains.extend(_inbound_chains(port, policy(port.target_port), mtls(port.target_port)))
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
    listener.listener_filters.extend(
        _inspectors(chains, any(p.protocol == Protocol.AUTO for p in captured))
    )
    return listener


def bound_inbound_listener(
    port: InboundPort, policy: InboundPolicy = NO_POLICY, mtls: InboundMtls = PLAINTEXT
) -> Listener:
    """A Sidecar ingress port that binds (captureMode NONE, or no iptables): a listener of its
    own on `<bind>:<port>`, named `<bind>_<port>`, with the chains virtualInbound would have."""
    chains = _inbound_chains(port, policy, mtls)
    return Listener(
        name=listener_name(port.bind, port.target_port),
        address=socket_address(port.bind, port.target_port),
        traffic_direction=base_pb2.INBOUND,
        filter_chains=chains,
        listener_filters=_inspectors(chains, port.protocol == Protocol.AUTO),
    )


# --- all of a sidecar's listeners ---------------------------------------------------------------


def sidecar_listeners(
    ctx: PushContext,
    proxy: Proxy,
    sidecar: Sidecar | None = None,
    registry_only: bool = False,
) -> list[Listener]:
    listeners = outbound_listeners(
        ctx, egress_scopes(ctx, proxy, sidecar), registry_only, proxy.namespace
    )
    inbound = inbound_ports(ctx, proxy)

    def policy(target_port: int) -> InboundPolicy:
        return inbound_policy(ctx, proxy, target_port)

    effective = inbound_mtls(ctx, proxy) if inbound else None

    def mtls(target_port: int) -> InboundMtls:
        assert effective is not None
        return InboundMtls(effective.for_port(target_port), proxy.mesh_mtls)

    listeners += [
        bound_inbound_listener(p, policy(p.target_port), mtls(p.target_port))
        for p in inbound
        if p.bind_to_port
    ]
    if proxy.interception_mode != InterceptionMode.NONE:
        listeners.append(virtual_outbound(registry_only))
        listeners.append(virtual_inbound(inbound, policy, mtls))
    # A name can come up twice only if an ingress bind equals an egress bind and port: the
    # first (outbound) stays, as Envoy would refuse the pair.
    unique: dict[str, Listener] = {}
    for listener in listeners:
        unique.setdefault(listener.name, listener)
    return [unique[n] for n in sorted(unique)]
