"""Per-type generation for one proxy, with the work shared by many proxies cached per push."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from google.protobuf import message

from istiolite.model.proxy import Proxy, ProxyType
from istiolite.model.sidecar import Sidecar
from istiolite.networking.cluster import fixed_clusters, outbound_clusters
from istiolite.networking.credentials import credential_secrets
from istiolite.networking.endpoint import (
    LocalityView,
    LocalizedClusters,
    all_load_assignments,
    load_assignment_for,
    locality_view,
    localized_assignment,
    localized_clusters,
)
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
    # exportTo and DestinationRule precedence can make clusters differ by namespace; a
    # DestinationRule workloadSelector that picks this sidecar, by its labels (`workload`: None
    # for every proxy no selector picks, so the common case stays shared).
    view = ctx.scope_key(proxy.namespace)
    labels = _labels(ctx, proxy) if proxy.type == ProxyType.SIDECAR else None
    workload = ctx.workload_key(proxy.namespace, labels)
    shared = _cached(
        ctx,
        ("cds-shared", proxy.type, scope, view, workload),
        lambda: _serialize(
            types.CLUSTER,
            outbound_clusters(
                ctx,
                egress_services(ctx, proxy.namespace, sidecar),
                proxy.namespace,
                labels if workload is not None else None,
            )
            + fixed_clusters(proxy),
        ),
    )
    if not inbound:
        return shared

    def build() -> Resources:
        own = _serialize(types.CLUSTER, [inbound_cluster_for(p) for p in inbound])
        return dict(sorted({**shared, **own}.items()))

    return _cached(ctx, ("cds", proxy.type, scope, view, workload, inbound), build)


_EDS_KEY = ("eds",)
# EDS is one map for all proxies (_EDS_KEY) unless a DestinationRule makes some assignments depend
# on the proxy's locality. Then (_EDS_LOCALIZED, scope) holds those clusters for a namespace view,
# and (_EDS_VARIANT, scope, LocalityView) a copy of the shared map with their assignments for
# proxies at that locality: one per locality (and failoverPriority labels) in use, shared by the
# proxies there. Everything a variant needs to be rebuilt is in its key (see carry_over).
_EDS_LOCALIZED = "eds-localized"
_EDS_VARIANT = "eds-variant"


def _localized(ctx: PushContext, proxy: Proxy) -> tuple[str | None, LocalizedClusters]:
    scope = ctx.scope_key(proxy.namespace)
    key = (_EDS_LOCALIZED, scope)
    found: LocalizedClusters | None = ctx.cache.get(key)
    if found is None:
        found = ctx.cache[key] = localized_clusters(ctx, proxy.namespace)
    return scope, found


def _localize(
    ctx: PushContext,
    into: Resources,
    shared: Resources,
    localized: LocalizedClusters,
    view: LocalityView,
    names: Iterable[str],
) -> None:
    """Set `names` in a variant map: localized clusters built for `view`, others from `shared`
    (an assignment no different from the shared one keeps the shared Resource)."""
    for name in names:
        cluster = localized.clusters.get(name)
        if cluster is None:
            if name in shared:
                into[name] = shared[name]
            else:
                into.pop(name, None)
            continue
        endpoints = ctx.endpoints(cluster.service, cluster.port, cluster.subset_labels)
        built = to_resource(
            name, types.ENDPOINT, localized_assignment(name, endpoints, cluster.policy, view)
        )
        same = shared.get(name)
        into[name] = same if same is not None and same.version == built.version else built


def _endpoints(ctx: PushContext, proxy: Proxy) -> Resources:
    shared = _cached(
        ctx, _EDS_KEY, lambda: _serialize(types.ENDPOINT, list(all_load_assignments(ctx).values()))
    )
    scope, localized = _localized(ctx, proxy)
    if not localized.clusters:
        return shared  # the common case: one map for every proxy
    view = locality_view(ctx, proxy, _labels(ctx, proxy), localized)

    def build() -> Resources:
        variant = dict(shared)  # same order: only values are replaced
        _localize(ctx, variant, shared, localized, view, localized.clusters)
        return variant

    return _cached(ctx, (_EDS_VARIANT, scope, view), build)


def _is_variant(key: Hashable) -> bool:
    return isinstance(key, tuple) and len(key) == 3 and key[0] == _EDS_VARIANT


def carry_over(old: PushContext, new: PushContext, eds_clusters: frozenset[str]) -> None:
    """Endpoint-only change: `new` reuses every result `old` built, except the assignments of
    `eds_clusters`, rebuilt from `new` (in the shared map and in every locality variant).
    Clusters, listeners and routes do not read endpoints (headless services excepted: the caller
    makes those a full push), nor do the DestinationRules that decide which clusters vary."""
    variants: list[tuple[Any, Resources]] = []  # ((_EDS_VARIANT, scope, view), map)
    for key, value in old.cache.items():
        if _is_variant(key):
            variants.append((key, value))
        elif key != _EDS_KEY:
            new.cache[key] = value
        else:
            assignments = dict(value)
            for name in eds_clusters:
                cla = load_assignment_for(new, name)
                if cla is None:
                    assignments.pop(name, None)
                else:
                    assignments[name] = to_resource(name, types.ENDPOINT, cla)
            new.cache[key] = dict(sorted(assignments.items()))
    shared: Resources = new.cache.get(_EDS_KEY, {})
    for key, value in variants:
        _, scope, view = key
        localized: LocalizedClusters = new.cache[(_EDS_LOCALIZED, scope)]
        variant = dict(value)
        _localize(new, variant, shared, localized, view, eds_clusters)
        new.cache[key] = (
            variant if variant.keys() == value.keys() else dict(sorted(variant.items()))
        )


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
