"""Security policy on a sidecar's inbound ports: the filters that authenticate and authorize
requests before they reach the application (RequestAuthentication → jwt_authn,
AuthorizationPolicy → RBAC), in Istio's order.

Each policy kind adds its filters in `inbound_policy`; the listener builders put them in front of
the port's own filters. Whatever selects a policy for a workload (its labels, its namespace)
must be part of `inbound_policy_key`, because listeners are cached by proxy shape.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)

from istiolite.model.proxy import Proxy
from istiolite.networking.authz import authz_filters, authz_key, gateway_rbac_filters
from istiolite.networking.jwt_authn import jwt_authn_filter
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
    http: list[hcm.HttpFilter] = []
    labels = proxy_labels(ctx, proxy)
    # RequestAuthentication: jwt_authn, first (RBAC reads the payload it verified).
    authn = ctx.request_authentications_for(proxy.namespace, labels)
    jwt_filter = jwt_authn_filter(ctx, authn, clear_route_cache=False)
    if jwt_filter is not None:
        http.append(jwt_filter)
    # AuthorizationPolicy -> RBAC (the same filters on every port: rules match ports).
    authz = authz_filters(ctx, proxy.namespace, labels)
    http.extend(authz.http)
    if not http and not authz.tcp:
        return NO_POLICY
    return InboundPolicy(http_filters=tuple(http), tcp_filters=tuple(authz.tcp))


def inbound_policy_key(ctx: PushContext, proxy: Proxy) -> Hashable:
    """What, besides the proxy's shape, decides its inbound policies (part of the LDS key)."""
    labels = proxy_labels(ctx, proxy)
    # RequestAuthentication: which policies select the workload.
    authn = tuple(p.key for p in ctx.request_authentications_for(proxy.namespace, labels))
    # AuthorizationPolicy: which policies select the workload.
    authz = authz_key(ctx, proxy.namespace, labels)
    return (authn, authz)


def gateway_http_policy(
    ctx: PushContext, namespace: str, labels: Mapping[str, str]
) -> tuple[hcm.HttpFilter, ...]:
    """The policy filters ahead of a gateway's HTTP routes (the gateway proxy's namespace and
    labels select the policies, as a sidecar's do); the gateway listeners are keyed by both."""
    out: list[hcm.HttpFilter] = []
    # RequestAuthentication (istiod clears the route cache on gateways: routes may match on
    # the headers the filter writes).
    authn = ctx.request_authentications_for(namespace, labels)
    jwt_filter = jwt_authn_filter(ctx, authn, clear_route_cache=True)
    if jwt_filter is not None:
        out.append(jwt_filter)
    # AuthorizationPolicy selecting the gateway: RBAC after jwt_authn.
    out.extend(gateway_rbac_filters(ctx, namespace, labels))
    return tuple(out)
