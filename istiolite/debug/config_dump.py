"""Generated resources shaped like Envoy's admin /config_dump (ConfigDump of per-type dumps)."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from google.protobuf import any_pb2

from istiolite import type_urls
from istiolite.networking.resource import Resource

Shared = config_dump_shared_pb2


def _any(resource: Resource) -> any_pb2.Any:
    return any_pb2.Any(type_url=resource.type_url, value=resource.payload)


def config_dump(by_type: Mapping[str, Mapping[str, Resource]]) -> config_dump_pb2.ConfigDump:
    """`by_type`: type URL -> name -> resource. Versions are each resource's content hash."""
    dump = config_dump_pb2.ConfigDump()
    clusters = Shared.ClustersConfigDump(
        dynamic_active_clusters=[
            Shared.ClustersConfigDump.DynamicCluster(version_info=r.version, cluster=_any(r))
            for r in by_type.get(type_urls.CLUSTER, {}).values()
        ]
    )
    endpoints = Shared.EndpointsConfigDump(
        dynamic_endpoint_configs=[
            Shared.EndpointsConfigDump.DynamicEndpointConfig(
                version_info=r.version, endpoint_config=_any(r)
            )
            for r in by_type.get(type_urls.ENDPOINT, {}).values()
        ]
    )
    listeners = Shared.ListenersConfigDump(
        dynamic_listeners=[
            Shared.ListenersConfigDump.DynamicListener(
                name=r.name,
                active_state=Shared.ListenersConfigDump.DynamicListenerState(
                    version_info=r.version, listener=_any(r)
                ),
            )
            for r in by_type.get(type_urls.LISTENER, {}).values()
        ]
    )
    routes = Shared.RoutesConfigDump(
        dynamic_route_configs=[
            Shared.RoutesConfigDump.DynamicRouteConfig(version_info=r.version, route_config=_any(r))
            for r in by_type.get(type_urls.ROUTE, {}).values()
        ]
    )
    for section in (clusters, endpoints, listeners, routes):
        dump.configs.add().Pack(section)
    return dump
