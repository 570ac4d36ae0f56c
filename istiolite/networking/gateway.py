"""Gateway proxies (`router`): listeners from the Gateways selecting the proxy, and routes from
the VirtualServices bound to those Gateways, named and merged as istiod does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)

from istiolite.logs import get_logger
from istiolite.model.gateway import Gateway, Server
from istiolite.model.protocol import Protocol
from istiolite.model.virtualservice import VirtualService
from istiolite.networking.filters import http_connection_manager, tcp_proxy, tls_inspector
from istiolite.networking.guard import guarded, object_name
from istiolite.networking.http_route import http_routes
from istiolite.networking.inbound_policy import gateway_http_policy
from istiolite.networking.mtls import istio_mutual_gateway, sni_name
from istiolite.networking.names import Direction, cluster_name, listener_name
from istiolite.networking.tcp_route import TcpTarget, guarded_l4_target
from istiolite.networking.tls_context import (
    HTTP_ALPN,
    downstream_tls_context,
    transport_socket,
)
from istiolite.networking.typed import socket_address
from istiolite.push.context import PushContext

log = get_logger("gateway")

WILDCARD_IP = "0.0.0.0"


@dataclass(frozen=True, slots=True)
class BoundServer:
    """One Gateway server as this proxy serves it."""

    gateway: Gateway
    server: Server
    route_name: str  # RDS name; "" for servers without HTTP routes


def gateway_route_name(gateway: Gateway, server: Server, listen_port: int) -> str:
    """istiod's: plain HTTP servers on a port share `http.<listen port>`; each TLS-terminating
    HTTPS server has its own `https.<server port>.<portName>.<gateway>.<namespace>`."""
    bind = f".{server.bind}" if server.bind else ""
    if server.is_http:
        return f"http.{listen_port}{bind}"
    if server.terminates_https:
        return (
            f"https.{server.port}.{server.port_name}.{gateway.meta.name}.{gateway.namespace}{bind}"
        )
    return ""


def _credential_ready(ctx: PushContext, namespace: str, server: Server) -> bool:
    """A credentialName server needs usable Secrets in the proxy's namespace (and a CA for
    MUTUAL); without them it is left out rather than leaving the whole listener warming."""
    tls = server.tls
    return tls is None or not tls.credential_name or not ctx.credential_problems(namespace, tls)


def _sni_hosts(server: Server) -> list[str]:
    hosts = sorted({host for _, host in server.hosts})
    return [] if "*" in hosts else hosts


def _listen_port(ctx: PushContext, namespace: str, labels: Mapping[str, str], port: int) -> int:
    """As istiod: a server port that is a port of a Service selecting the gateway listens on
    that Service's numeric targetPort (80 -> 8080 for a non-root gateway); otherwise as written."""
    for service in ctx.services:
        if service.namespace != namespace or not service.selector:
            continue
        if any(labels.get(k) != v for k, v in service.selector.items()):
            continue
        for service_port in service.ports:
            if service_port.port == port and isinstance(service_port.target_port, int):
                return service_port.target_port
    return port


def _translated(server: Server) -> bool:
    """HTTP, TLS terminated here (HTTPS or TLS, with credentials or ISTIO_MUTUAL), TLS passed
    through by SNI (PASSTHROUGH, AUTO_PASSTHROUGH), or plain TCP."""
    if server.is_http:
        return True
    if server.tls is None:
        return server.protocol in ("TCP", "MONGO", "REDIS", "MYSQL")
    return server.terminates_tls or server.tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH")


def _server_tls(server: Server) -> base_pb2.TransportSocket:
    """The TLS a server terminates: ISTIO_MUTUAL with the mesh certificates (a client
    certificate from the mesh required), else the server's own credentials."""
    assert server.tls is not None
    if server.tls.mode == "ISTIO_MUTUAL":
        return transport_socket(istio_mutual_gateway(HTTP_ALPN))
    return transport_socket(downstream_tls_context(server.tls))


def _auto_passthrough_chains(
    ctx: PushContext, server: Server, namespace: str
) -> list[lc.FilterChain]:
    """AUTO_PASSTHROUGH (istiod's east-west gateway): a chain per cluster of every service the
    server's hosts cover, matched by the SNI a client sidecar sends to it
    (`outbound_.<port>_.<subset>_.<fqdn>`) and passed on, still encrypted, to that cluster."""
    chains = []
    for service in ctx.services_for(namespace):
        host = ctx.hostname(service)
        if not any(
            ns in ("*", service.namespace) and _host_intersection(pattern, host) == host
            for ns, pattern in server.hosts
        ):
            continue
        subsets = [] if service.headless else ctx.subsets(host, namespace)
        for port in service.ports:
            if port.protocol == Protocol.UDP:
                continue
            for subset in ["", *(s.name for s in subsets)]:
                cluster = cluster_name(Direction.OUTBOUND, port.port, subset, host)
                chains.append(
                    lc.FilterChain(
                        filter_chain_match=lc.FilterChainMatch(
                            server_names=[sni_name(port.port, subset, host)]
                        ),
                        filters=[tcp_proxy(cluster, cluster)],
                    )
                )
    return chains


def bound_servers(
    ctx: PushContext, namespace: str, labels: Mapping[str, str]
) -> dict[tuple[str, int], list[BoundServer]]:
    """Servers by listener (bind, port), merged across the selecting Gateways. As istiod, a port
    is either plain HTTP or TLS/TCP: a later server of the other kind is left out."""
    by_listener: dict[tuple[str, int], list[BoundServer]] = {}
    # SNI names a port's TLS-terminating servers already claim: a later server claiming one
    # again is left out here, before it gets a route configuration nothing would use.
    claimed: dict[tuple[str, int], set[str]] = {}
    for gateway in ctx.gateways_for(labels, namespace):
        for server in gateway.servers:
            if not _translated(server):
                log.debug(
                    "gateway server mode not translated yet",
                    gateway=gateway.key,
                    server=server.index,
                    mode=server.tls.mode if server.tls else "",
                )
                continue
            if not _credential_ready(ctx, namespace, server):
                continue
            key = (server.bind or WILDCARD_IP, _listen_port(ctx, namespace, labels, server.port))
            bound = by_listener.setdefault(key, [])
            if bound and bound[0].server.is_http != server.is_http:
                continue
            if server.terminates_tls and not server.is_http:
                names = set(_sni_hosts(server)) or {"*"}
                taken = claimed.setdefault(key, set())
                if names & taken:
                    log.debug("duplicate SNI left out", gateway=gateway.key, server=server.index)
                    continue
                taken.update(names)
            route = gateway_route_name(gateway, server, key[1])
            bound.append(BoundServer(gateway, server, route))
    return {k: v for k, v in by_listener.items() if v}


def _bound_virtual_services(
    ctx: PushContext, bound: BoundServer, namespace: str
) -> list[tuple[VirtualService, list[str]]]:
    """The VirtualServices bound to the server's Gateway, each with the hosts it shares with the
    server (a server host `ns/host` takes only VirtualServices of `ns`)."""
    out = []
    # Those exported to the gateway proxy's namespace, in istiod's order (exportTo).
    for vs in ctx.gateway_virtual_services_for(bound.gateway.key, namespace):
        hosts: list[str] = []
        for ns, server_host in bound.server.hosts:
            if ns not in ("*", vs.namespace):
                continue
            for vs_host in vs.hosts:
                found = _host_intersection(
                    server_host, ctx.resolve_host(vs_host.lower(), vs.namespace)
                )
                if found is not None and found not in hosts:
                    hosts.append(found)
        if hosts:
            out.append((vs, hosts))
    return out


def _tcp_proxy(target: TcpTarget) -> lc.Filter:
    stat_prefix = target if isinstance(target, str) else target[0][0]
    return tcp_proxy(stat_prefix, target)


def _l4_chains(
    ctx: PushContext, bound: BoundServer, port: int, namespace: str
) -> list[lc.FilterChain]:
    """Filter chains of a non-HTTP server: PASSTHROUGH routes tls[] by the SNI in the client
    hello; TCP (or TLS terminated here) takes the first tcp[] route that fits the port."""
    server = bound.server
    chains: list[lc.FilterChain] = []
    for vs, _ in _bound_virtual_services(ctx, bound, namespace):
        if server.tls is not None and server.tls.mode == "PASSTHROUGH":
            for route in vs.tls:
                for match in route.match:
                    if match.port is not None and match.port != server.port:
                        continue
                    if not match.applies_on(bound.gateway.key, vs.namespace):
                        continue
                    target = guarded_l4_target(ctx, vs, route.route, port)
                    if target is None:
                        continue
                    chains.append(
                        lc.FilterChain(
                            filter_chain_match=lc.FilterChainMatch(
                                server_names=list(match.sni_hosts)
                            ),
                            filters=[_tcp_proxy(target)],
                        )
                    )
            continue
        for tcp in vs.tcp:
            if not tcp.applies(server.port, bound.gateway.key, vs.namespace):
                continue
            target = guarded_l4_target(ctx, vs, tcp.route, port)
            if target is None:
                continue  # that VirtualService is left out; a later one may fit
            chain = lc.FilterChain(filters=[_tcp_proxy(target)])
            if server.tls is not None:
                chain.filter_chain_match.server_names.extend(_sni_hosts(server))
                chain.transport_socket.CopyFrom(_server_tls(server))
            # As istiod: the first VirtualService route that fits serves the whole server.
            return [chain]
    return chains


def _https_chain(
    bound: BoundServer, stat_prefix: str, policy: tuple[hcm.HttpFilter, ...]
) -> lc.FilterChain:
    assert bound.server.tls is not None
    return lc.FilterChain(
        filter_chain_match=lc.FilterChainMatch(server_names=_sni_hosts(bound.server)),
        transport_socket=_server_tls(bound.server),
        filters=[
            http_connection_manager(
                bound.server.name or stat_prefix,
                rds_name=bound.route_name,
                use_remote_address=True,
                policy_filters=policy,
            )
        ],
    )


def _server_chains(
    ctx: PushContext,
    b: BoundServer,
    port: int,
    namespace: str,
    stat_prefix: str,
    policy: tuple[hcm.HttpFilter, ...],
) -> list[lc.FilterChain]:
    if b.server.terminates_https:
        return [_https_chain(b, stat_prefix, policy)]
    if b.server.tls is not None and b.server.tls.mode == "AUTO_PASSTHROUGH":
        return _auto_passthrough_chains(ctx, b.server, namespace)
    return _l4_chains(ctx, b, port, namespace)


def gateway_listeners(
    ctx: PushContext, namespace: str, labels: Mapping[str, str]
) -> list[listener_pb2.Listener]:
    listeners = []
    # Authentication and authorization ahead of the HTTP routes (inbound_policy).
    policy = gateway_http_policy(ctx, namespace, labels)
    for (bind, port), bound in sorted(bound_servers(ctx, namespace, labels).items()):
        name = listener_name(bind, port)
        listener = listener_pb2.Listener(
            name=name, address=socket_address(bind, port), traffic_direction=base_pb2.OUTBOUND
        )
        stat_prefix = f"outbound_{name}"
        if bound[0].server.is_http:
            listener.filter_chains.append(
                lc.FilterChain(
                    filters=[
                        http_connection_manager(
                            stat_prefix,
                            rds_name=bound[0].route_name,
                            use_remote_address=True,
                            policy_filters=policy,
                        )
                    ]
                )
            )
            listeners.append(listener)
            continue
        # Envoy refuses two chains with the same match: a later server or route whose SNI names
        # are already served on this port is left out, as istiod does.
        taken: set[str] = set()
        for b in bound:
            chains = guarded(
                partial(_server_chains, ctx, b, port, namespace, stat_prefix, policy),
                object_name("Gateway", b.gateway),
                field=f"servers[{b.server.name or port}]",
                dropped=f"its filter chains on listener {name}",
            )
            for chain in chains or ():
                names = set(chain.filter_chain_match.server_names) or {"*"}
                if names & taken:
                    log.debug("duplicate SNI left out", listener=name, server_names=sorted(names))
                    continue
                taken.update(names)
                listener.filter_chains.append(chain)
        if listener.filter_chains:
            if any(c.filter_chain_match.server_names for c in listener.filter_chains):
                listener.listener_filters.append(tls_inspector())
            listeners.append(listener)
    return listeners


def _host_intersection(a: str, b: str) -> str | None:
    """The more specific of two host patterns when one covers the other (`*`, `*.x.com`)."""
    if a == b:
        return a
    for wide, narrow in ((a, b), (b, a)):
        if wide == "*":
            return narrow
        if wide.startswith("*.") and narrow.endswith(wide[1:]):
            return narrow
    return None


def _is_catch_all(route: rc.Route) -> bool:
    m = route.match
    path = m.WhichOneof("path_specifier")
    catch_all = (
        (path == "prefix" and m.prefix == "/")
        or (path == "path_separated_prefix" and m.path_separated_prefix == "/")
        or (path == "safe_regex" and m.safe_regex.regex == ".*")
    )
    return catch_all and not m.headers and not m.query_parameters


def gateway_route_configs(
    ctx: PushContext, namespace: str, labels: Mapping[str, str]
) -> list[route_pb2.RouteConfiguration]:
    by_route: dict[str, list[BoundServer]] = {}
    for bound in bound_servers(ctx, namespace, labels).values():
        for b in bound:
            if b.route_name:
                by_route.setdefault(b.route_name, []).append(b)
    configs = []
    for name, servers in sorted(by_route.items()):
        vhosts: dict[str, rc.VirtualHost] = {}
        for b in servers:
            port = b.server.port
            redirect = b.server.tls is not None and b.server.tls.https_redirect
            for vs, hosts in _bound_virtual_services(ctx, b, namespace):
                if not vs.http:
                    continue
                routes = guarded(
                    partial(http_routes, ctx, vs, port, (namespace, labels), b.gateway.key),
                    object_name("VirtualService", vs),
                    dropped=f"its routes in gateway route {name}",
                )
                if routes is None:
                    continue
                for host in hosts:
                    vhost = vhosts.get(host)
                    if vhost is None:
                        vhost = vhosts[host] = rc.VirtualHost(
                            name=f"{host}:{port}",
                            domains=[host],
                            include_request_attempt_count=True,
                        )
                    # Several VirtualServices for one host: their routes in order, merged.
                    vhost.routes.extend(routes)
                    if redirect:
                        vhost.require_tls = rc.VirtualHost.ALL
            if redirect:
                # httpsRedirect needs no VirtualService: every host of the server redirects.
                for _, host in b.server.hosts:
                    vhost = vhosts.setdefault(
                        host,
                        rc.VirtualHost(
                            name=f"{host}:{port}",
                            domains=[host],
                            include_request_attempt_count=True,
                        ),
                    )
                    vhost.require_tls = rc.VirtualHost.ALL
        if not vhosts:
            port = servers[0].server.port
            # No route for anything: Envoy answers 404.
            vhosts["blackhole"] = rc.VirtualHost(name=f"blackhole:{port}", domains=["*"])
        for vhost in vhosts.values():
            # As istiod: catch-all routes go last, so merged VirtualServices' specific routes
            # still get their turn.
            ordered = sorted(vhost.routes, key=_is_catch_all)
            del vhost.routes[:]
            vhost.routes.extend(ordered)
        configs.append(
            route_pb2.RouteConfiguration(
                name=name,
                virtual_hosts=sorted(vhosts.values(), key=lambda v: v.name),
                validate_clusters={"value": False},
                ignore_port_in_host_matching=True,
            )
        )
    return configs
