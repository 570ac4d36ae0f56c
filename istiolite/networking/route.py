"""RDS: one outbound route configuration per HTTP port, a virtual host per service."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from typing import TypeAlias

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from istiolite.model.protocol import Protocol
from istiolite.model.proxy import InterceptionMode, Proxy
from istiolite.model.service import Service, ServicePort
from istiolite.model.sidecar import HTTP_PROXY, Sidecar
from istiolite.networking.guard import guarded, object_name
from istiolite.networking.http_route import http_routes
from istiolite.networking.names import PASSTHROUGH_CLUSTER, Direction, cluster_name, route_name
from istiolite.networking.retry import default_retry_policy
from istiolite.networking.sidecar_scope import EgressScope, egress_scopes
from istiolite.networking.traffic_policy import route_hash_policies
from istiolite.networking.typed import duration
from istiolite.push.context import PushContext

RouteConfiguration: TypeAlias = route_pb2.RouteConfiguration


def route_to_cluster(cluster: str) -> rc.Route:
    return rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        route=rc.RouteAction(
            cluster=cluster,
            # istiod turns Envoy's 15 s default route timeout off.
            timeout=duration(0),
            retry_policy=default_retry_policy(),
            # As istiod for Envoy: gRPC requests time out like others (max_stream_duration would
            # make Envoy ignore `timeout`; istiod sets it only for proxyless gRPC).
            max_grpc_timeout=duration(0),
        ),
    )


def service_domains(ctx: PushContext, service: Service, port: int, proxy_ns: str) -> list[str]:
    """The names a client may use for a service: istiod's set, short names only in-namespace."""
    fqdn = ctx.hostname(service)
    if service.host:
        # A ServiceEntry host is called by that name (and its address), never by a short one.
        names = [service.host] + ([service.cluster_ip] if service.cluster_ip else [])
        return [d for name in names for d in (name, f"{name}:{port}")]
    names = [fqdn]
    if service.namespace == proxy_ns:
        names.append(service.name)
    names.append(f"{service.name}.{service.namespace}")
    names.append(f"{service.name}.{service.namespace}.svc")
    if service.cluster_ip and not service.headless:
        names.append(service.cluster_ip)
    domains: list[str] = []
    for name in names:
        domains += [name, f"{name}:{port}"]
    return domains


def http_ports(
    ctx: PushContext, proxy: Proxy, services: Sequence[Service] | None = None
) -> dict[int, list[tuple[Service, ServicePort]]]:
    """Service ports that get an HTTP route, grouped by port number."""
    by_port: dict[int, list[tuple[Service, ServicePort]]] = defaultdict(list)
    for service in ctx.services if services is None else services:
        if service.headless and proxy.interception_mode == InterceptionMode.NONE:
            # Without interception a client reaches headless pods directly, not through Envoy.
            continue
        for port in service.ports:
            if port.protocol.is_http or port.protocol == Protocol.AUTO:
                by_port[port.port].append((service, port))
    return by_port


def _routed_ports(
    ctx: PushContext, proxy: Proxy, scopes: Sequence[EgressScope]
) -> dict[int, tuple[list[tuple[Service, ServicePort]], bool]]:
    """Per route name (port): its services and whether a bound listener uses it. As istiod's
    GetEgressListenerForRDS, a port's routes come from the egress listener on that port, else
    from the catch-all one."""
    catch_all = next((s for s in scopes if s.port is None), None)
    out: dict[int, tuple[list[tuple[Service, ServicePort]], bool]] = {}
    if catch_all is not None:
        for number, members in http_ports(ctx, proxy, catch_all.services).items():
            out[number] = (members, catch_all.bind_to_port)
    for scope in scopes:
        port = scope.port
        if port is None or not port.number or port.protocol == HTTP_PROXY:
            continue
        http = port.app_protocol.is_http or port.app_protocol == Protocol.AUTO
        if not http and port.number not in out:
            continue
        members = [
            (service, service_port)
            for service in scope.services
            if not (service.headless and proxy.interception_mode == InterceptionMode.NONE)
            for service_port in service.ports
        ]
        out[port.number] = (members, scope.bind_to_port)
    return out


def fallback_virtual_host(
    proxy: Proxy, registry_only: bool = False, bound: bool = False
) -> rc.VirtualHost:
    # REGISTRY_ONLY refuses what the registry does not know; on a listener that binds a port
    # (no interception) the original destination would be Envoy's own listener, so it refuses
    # too instead of looping.
    if registry_only or bound or proxy.interception_mode == InterceptionMode.NONE:
        return rc.VirtualHost(
            name="block_all",
            domains=["*"],
            routes=[
                rc.Route(
                    name="block_all",
                    match=rc.RouteMatch(prefix="/"),
                    direct_response=rc.DirectResponseAction(status=502),
                )
            ],
        )
    return rc.VirtualHost(
        name="allow_any", domains=["*"], routes=[route_to_cluster(PASSTHROUGH_CLUSTER)]
    )


def outbound_route_configs(
    ctx: PushContext,
    proxy: Proxy,
    sidecar: Sidecar | None = None,
    registry_only: bool = False,
) -> list[RouteConfiguration]:
    result: list[RouteConfiguration] = []
    scopes = egress_scopes(ctx, proxy, sidecar)
    for port, (members, bound) in sorted(_routed_ports(ctx, proxy, scopes).items()):
        claimed: set[str] = set()
        hosts: list[rc.VirtualHost] = []
        for service, service_port in members:
            host = ctx.hostname(service)
            # Envoy rejects a route configuration where two virtual hosts share a domain.
            domains = [
                d for d in service_domains(ctx, service, port, proxy.namespace) if d not in claimed
            ]
            claimed.update(domains)
            vs = ctx.virtual_service(host, proxy.namespace)
            routes = None
            if vs is not None and vs.http:
                # A VirtualService that fails to translate is left out: the default route.
                routes = guarded(
                    partial(http_routes, ctx, vs, port, (proxy.namespace, proxy.labels)),
                    object_name("VirtualService", vs),
                    dropped=f"its routes for {host}:{port} (default route used)",
                )
            if routes is None:
                routes = [
                    route_to_cluster(cluster_name(Direction.OUTBOUND, service_port.port, "", host))
                ]
                # A consistent-hash DestinationRule needs the key hashed on the route.
                routes[0].route.hash_policy.extend(
                    route_hash_policies(ctx, host, "", service_port.port, proxy.namespace)
                )
            hosts.append(
                rc.VirtualHost(
                    name=f"{host}:{port}",
                    domains=domains,
                    routes=routes,
                    include_request_attempt_count=True,
                )
            )
        hosts.append(fallback_virtual_host(proxy, registry_only, bound))
        result.append(
            RouteConfiguration(
                name=route_name(port), virtual_hosts=hosts, validate_clusters={"value": False}
            )
        )
    return result
