"""Per-type generation for one proxy, with the work shared by many proxies cached per push."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from google.protobuf import message

from istiolite.model.proxy import Proxy, ProxyType
from istiolite.model.sidecar import Sidecar
from istiolite.networking.cluster import fixed_clusters, outbound_clusters
from istiolite.networking.credentials import credential_secrets
from istiolite.networking.endpoint import all_load_assignments, load_assignment_for
from istiolite.networking.gateway import gateway_listeners, gateway_route_configs
from istiolite.networking.listener import sidecar_listeners
from istiolite.networking.resource import Resource, to_resource
from istiolite.networking.route import outbound_route_configs
from istiolite.networking.sidecar_scope import egress_services, inbound_cluster_for
from istiolite.networking.workload import inbound_ports
from istiolite.push.context import PushContext
from istiolite.xds import types

Resources = dict[str, Resource]


def _cached(ctx: PushContext, key: Hashable, build: Callable[[], Resources]) -> Resources:
    found: Resources | None = ctx.cache.get(key)
    if found is None:
        found = build()
        ctx.cache[key] = found
    return found


def _serialize(type_url: str, messages: list[Any]) -> Resources:
    out: Resources = {}
    for msg in messages:
        name = msg.cluster_name if type_url == types.ENDPOINT else msg.name
        out[name] = to_resource(name, type_url, msg)
    return dict(sorted(out.items()))


def _labels(ctx: PushContext, proxy: Proxy) -> dict[str, str]:
    """The proxy's labels: from its metadata, else from its Pod."""
    pod = ctx.pods.get((proxy.namespace, proxy.pod_name))
    return proxy.labels or (pod.meta.labels if pod else {})


def _scope(ctx: PushContext, proxy: Proxy) -> tuple[Sidecar | None, Hashable]:
    """The Sidecar resource that scopes this proxy (None: the whole mesh), and a cache key."""
    labels = _labels(ctx, proxy)
    key = ("sidecar-of", proxy.namespace, frozenset(labels.items()))
    found: tuple[Sidecar | None, Hashable] | None = ctx.cache.get(key)
    if found is None:
        sidecar = ctx.sidecar_for(proxy.namespace, labels)
        # A root-namespace Sidecar reads `.` as the proxy's namespace: scoped per namespace.
        scope_key = (sidecar.namespace, sidecar.meta.name, proxy.namespace) if sidecar else None
        found = (sidecar, scope_key)
        ctx.cache[key] = found
    return found


def _registry_only(sidecar: Sidecar | None) -> bool:
    return sidecar is not None and sidecar.outbound_mode == "REGISTRY_ONLY"


def _clusters(ctx: PushContext, proxy: Proxy) -> Resources:
    inbound = tuple(inbound_ports(ctx, proxy)) if proxy.type == ProxyType.SIDECAR else ()
    sidecar, scope = _scope(ctx, proxy) if proxy.type == ProxyType.SIDECAR else (None, None)
    # exportTo and DestinationRule precedence can make clusters differ by namespace.
    view = ctx.scope_key(proxy.namespace)
    shared = _cached(
        ctx,
        ("cds-shared", proxy.type, scope, view),
        lambda: _serialize(
            types.CLUSTER,
            outbound_clusters(ctx, egress_services(ctx, proxy.namespace, sidecar), proxy.namespace)
            + fixed_clusters(proxy),
        ),
    )
    if not inbound:
        return shared

    def build() -> Resources:
        own = _serialize(types.CLUSTER, [inbound_cluster_for(p) for p in inbound])
        return dict(sorted({**shared, **own}.items()))

    return _cached(ctx, ("cds", proxy.type, scope, view, inbound), build)


_EDS_KEY = ("eds",)


def _endpoints(ctx: PushContext, proxy: Proxy) -> Resources:
    return _cached(
        ctx, _EDS_KEY, lambda: _serialize(types.ENDPOINT, list(all_load_assignments(ctx).values()))
    )


def carry_over(old: PushContext, new: PushContext, eds_clusters: frozenset[str]) -> None:
    """Endpoint-only change: `new` reuses every result `old` built, except the assignments of
    `eds_clusters`, rebuilt from `new`. Clusters, listeners and routes do not read endpoints
    (headless services excepted: the caller makes those a full push)."""
    for key, value in old.cache.items():
        if key != _EDS_KEY:
            new.cache[key] = value
            continue
        assignments = dict(value)
        for name in eds_clusters:
            cla = load_assignment_for(new, name)
            if cla is None:
                assignments.pop(name, None)
            else:
                assignments[name] = to_resource(name, types.ENDPOINT, cla)
        new.cache[key] = dict(sorted(assignments.items()))


def _gateway_key(ctx: PushContext, proxy: Proxy) -> tuple[str, frozenset[tuple[str, str]]]:
    # Gateway proxies of one namespace and labels select the same Gateways and Secrets.
    return proxy.namespace, frozenset(_labels(ctx, proxy).items())


def _listeners(ctx: PushContext, proxy: Proxy) -> Resources:
    if proxy.type == ProxyType.ROUTER:
        key = _gateway_key(ctx, proxy)
        return _cached(
            ctx,
            ("lds-gw", key),
            lambda: _serialize(types.LISTENER, gateway_listeners(ctx, key[0], dict(key[1]))),
        )
    sidecar, scope = _scope(ctx, proxy)
    key = ("lds", proxy.interception_mode, proxy.namespace, scope, inbound_ports(ctx, proxy))
    return _cached(
        ctx,
        key,
        lambda: _serialize(
            types.LISTENER,
            sidecar_listeners(ctx, proxy, sidecar, _registry_only(sidecar)),
        ),
    )


def _routes(ctx: PushContext, proxy: Proxy) -> Resources:
    if proxy.type == ProxyType.ROUTER:
        gw = _gateway_key(ctx, proxy)
        return _cached(
            ctx,
            ("rds-gw", gw),
            lambda: _serialize(types.ROUTE, gateway_route_configs(ctx, gw[0], dict(gw[1]))),
        )
    sidecar, scope = _scope(ctx, proxy)
    key: tuple[Hashable, ...] = ("rds", proxy.interception_mode, proxy.namespace, scope)
    if ctx.source_matched:
        # Some route applies only to some workloads: routes differ by the caller's labels.
        key += (frozenset(proxy.labels.items()),)
    return _cached(
        ctx,
        key,
        lambda: _serialize(
            types.ROUTE,
            outbound_route_configs(ctx, proxy, sidecar, _registry_only(sidecar)),
        ),
    )


def _secrets(ctx: PushContext, proxy: Proxy) -> Resources:
    return _cached(
        ctx,
        ("sds", proxy.namespace),
        lambda: _serialize(types.SECRET, credential_secrets(ctx, proxy.namespace)),
    )


_GENERATORS: dict[str, Callable[[PushContext, Proxy], Resources]] = {
    types.CLUSTER: _clusters,
    types.ENDPOINT: _endpoints,
    types.LISTENER: _listeners,
    types.ROUTE: _routes,
    types.SECRET: _secrets,
}


def generate(ctx: PushContext, proxy: Proxy, type_url: str) -> Resources:
    """Every resource of `type_url` this proxy should see, by name. Unknown types: none."""
    generator = _GENERATORS.get(type_url)
    return generator(ctx, proxy) if generator else {}


def message_class(type_url: str) -> type[message.Message] | None:
    from google.protobuf import symbol_database

    try:
        return symbol_database.Default().GetSymbol(type_url.removeprefix("type.googleapis.com/"))
    except KeyError:
        return None
