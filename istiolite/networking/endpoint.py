"""EDS: a ClusterLoadAssignment per outbound cluster, endpoints grouped by locality."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from istiolite.model.protocol import Protocol
from istiolite.model.service import Service, ServicePort
from istiolite.networking.names import Direction, cluster_name
from istiolite.networking.typed import socket_address, uint32
from istiolite.push.context import Locality, PushContext, ServiceEndpoint

ClusterLoadAssignment = endpoint_pb2.ClusterLoadAssignment


def load_assignment(name: str, endpoints: list[ServiceEndpoint]) -> ClusterLoadAssignment:
    """Every locality carries a weight (the sum of its endpoints): proxyless gRPC requires it."""
    by_locality: dict[Locality, list[ServiceEndpoint]] = defaultdict(list)
    for ep in endpoints:
        by_locality[ep.locality].append(ep)
    groups = []
    for locality in sorted(by_locality, key=lambda loc: (loc.region, loc.zone, loc.sub_zone)):
        members = by_locality[locality]
        groups.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(
                    region=locality.region, zone=locality.zone, sub_zone=locality.sub_zone
                ),
                load_balancing_weight=uint32(len(members)),
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=socket_address(ep.address, ep.port)
                        ),
                        health_status=health_check_pb2.HealthStatus.HEALTHY,
                        load_balancing_weight=uint32(1),
                    )
                    for ep in members
                ],
            )
        )
    # An empty assignment is still sent: without one Envoy leaves the cluster warming.
    return ClusterLoadAssignment(cluster_name=name, endpoints=groups)


def eds_clusters(
    ctx: PushContext, service: Service
) -> list[tuple[str, ServicePort, Mapping[str, str] | None]]:
    """(cluster name, port, subset labels) of every EDS cluster of a service: one per port, and
    one per port and DestinationRule subset (not headless, not ExternalName)."""
    if service.headless or service.type == "ExternalName":
        return []
    if service.type == "ServiceEntry" and service.resolution != "STATIC":
        return []  # DNS clusters carry their own addresses; NONE passes through
    host = ctx.hostname(service)
    subsets = ctx.all_subsets(host)  # shared by all proxies: every namespace's subsets
    out: list[tuple[str, ServicePort, Mapping[str, str] | None]] = []
    for port in service.ports:
        if port.protocol == Protocol.UDP:
            continue
        out.append((cluster_name(Direction.OUTBOUND, port.port, "", host), port, None))
        for subset in subsets:
            name = cluster_name(Direction.OUTBOUND, port.port, subset.name, host)
            out.append((name, port, subset.labels))
    return out


def eds_ports(ctx: PushContext, service: Service) -> list[tuple[str, ServicePort]]:
    """(cluster name, port) of every EDS cluster of a service, subsets included."""
    return [(name, port) for name, port, _ in eds_clusters(ctx, service)]


def all_load_assignments(ctx: PushContext) -> dict[str, ClusterLoadAssignment]:
    """Assignments for every EDS cluster; the same for all proxies, so built once per push."""
    return {
        name: load_assignment(name, ctx.endpoints(service, port, labels))
        for service in ctx.services
        for name, port, labels in eds_clusters(ctx, service)
    }


def load_assignment_for(ctx: PushContext, name: str) -> ClusterLoadAssignment | None:
    """The assignment of one outbound EDS cluster, or None when no such cluster exists."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != Direction.OUTBOUND:
        return None
    service = ctx.services_by_host.get(parts[3])
    if service is None:
        return None
    for candidate, port, labels in eds_clusters(ctx, service):
        if candidate == name:
            return load_assignment(name, ctx.endpoints(service, port, labels))
    return None
