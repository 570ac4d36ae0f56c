"""EDS: a ClusterLoadAssignment per outbound cluster, endpoints grouped by locality."""

from __future__ import annotations

from collections import defaultdict

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from istiolite.model.protocol import Protocol
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


def all_load_assignments(ctx: PushContext) -> dict[str, ClusterLoadAssignment]:
    """Assignments for every EDS cluster (not headless, not ExternalName); shared by all proxies."""
    result: dict[str, ClusterLoadAssignment] = {}
    for service in ctx.services:
        if service.headless or service.type == "ExternalName":
            continue
        host = ctx.hostname(service)
        for port in service.ports:
            if port.protocol == Protocol.UDP:
                continue
            name = cluster_name(Direction.OUTBOUND, port.port, "", host)
            result[name] = load_assignment(name, ctx.endpoints(service, port))
    return result
