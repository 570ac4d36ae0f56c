"""Security policy on a sidecar's inbound ports: the filters that authenticate and authorize
requests before they reach the application (RequestAuthentication → jwt_authn,
AuthorizationPolicy → RBAC), in Istio's order.

Each policy kind adds its filters in `inbound_policy`; the listener builders put them in front of
the port's own filters. Whatever selects a policy for a workload (its labels, its namespace)
must be part of `inbound_policy_key`, because listeners are cached by proxy shape.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)

from istiolite.model.proxy import Proxy
from istiolite.networking.authz import authz_filters, authz_key
from istiolite.networking.workload import proxy_labels
from istiolite.push.context import PushContext


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    # HTTP chains: ahead of CORS, fault injection and the router (jwt_authn first, then RBAC).
    http_filters: tuple[hcm.HttpFilter, ...] = ()
    # TCP chains: ahead of tcp_proxy (network RBAC).
    tcp_filters: tuple[lc.Filter, ...] = ()


NO_POLICY = InboundPolicy()


def inbound_policy(ctx: PushContext, proxy: Proxy, target_port: int) -> InboundPolicy:
    """The policy filters for one inbound port of `proxy`."""
    # AuthorizationPolicy -> RBAC (the same filters on every port: rules match ports).
    authz = authz_filters(ctx, proxy.namespace, proxy_labels(ctx, proxy))
    return InboundPolicy(http_filters=(*authz.http,), tcp_filters=(*authz.tcp,))


def inbound_policy_key(ctx: PushContext, proxy: Proxy) -> Hashable:
    """What, besides the proxy's shape, decides its inbound policies (part of the LDS key)."""
    # AuthorizationPolicy: which policies select the workload.
    authz = authz_key(ctx, proxy.namespace, proxy_labels(ctx, proxy))
    return (authz,)
