"""Per-type generation for one proxy. Work shared by proxies of the same shape is kept in the
ResourceCache (push/cache.py) across pushes, until something it was built from changes."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any

from google.protobuf import message

from istiolite import type_urls
from istiolite.model.proxy import Proxy, ProxyType
from istiolite.model.service import Service
from istiolite.model.sidecar import Sidecar
from istiolite.networking.cluster import fixed_clusters, outbound_clusters
from istiolite.networking.credentials import proxy_credentials
from istiolite.networking.endpoint import (
    LocalizedClusters,
    eds_clusters,
    load_assignment,
    locality_view,
    localized_assignment,
    localized_clusters,
)
from istiolite.networking.gateway import gateway_listeners, gateway_route_configs
from istiolite.networking.guard import guarded, object_name
from istiolite.networking.inbound_policy import inbound_policy_key
from istiolite.networking.listener import sidecar_listeners
from istiolite.networking.resource import Resource, to_resource
from istiolite.networking.route import outbound_route_configs
from istiolite.networking.sidecar_scope import egress_services, inbound_cluster_for
from istiolite.networking.workload import inbound_mtls, inbound_ports, sidecar_of
from istiolite.networking.workload import proxy_labels as _labels
from istiolite.push.cache import (
    ENDPOINT_KINDS,
    STRUCTURAL,
    ResourceCache,
    active_cache,
    memoized,
)
from istiolite.push.context import PushContext

Resources = dict[str, Resource]


def _serialize(type_url: str, messages: list[Any]) -> Resources:
    out: Resources = {}
    for msg in messages:
        name = msg.cluster_name if type_url == type_urls.ENDPOINT else msg.name
        out[name] = to_resource(name, type_url, msg)
    return dict(sorted(out.items()))


def _resources(
    key: Hashable,
    type_url: str,
    build: Callable[[], Resources],
    *,
    kinds: frozenset[str] = STRUCTURAL,
) -> Resources:
    """A generated resource map shared by the proxies whose shape is `key`."""
    return _cache().get(key, build, kinds=kinds, type_url=type_url)


def _scope(ctx: PushContext, proxy: Proxy) -> tuple[Sidecar | None, Hashable]:
    """The Sidecar resource that scopes this proxy (None: the whole mesh), and a cache key."""
    sidecar = sidecar_of(ctx, proxy)
    # A root-namespace Sidecar reads `.` as the proxy's namespace: scoped per namespace.
    return sidecar, (sidecar.namespace, sidecar.meta.name, proxy.namespace) if sidecar else None


def _registry_only(ctx: PushContext, sidecar: Sidecar | None) -> bool:
    """A Sidecar's outboundTrafficPolicy, else the mesh config's."""
    mode = sidecar.outbound_mode if sidecar is not None else ""
    return (mode or ctx.mesh.outbound_mode) == "REGISTRY_ONLY"


def _clusters(ctx: PushContext, proxy: Proxy) -> Resources:
    inbound = tuple(inbound_ports(ctx, proxy)) if proxy.type == ProxyType.SIDECAR else ()
    sidecar, scope = _scope(ctx, proxy) if proxy.type == ProxyType.SIDECAR else (None, None)
    # exportTo and DestinationRule precedence can make clusters differ by namespace; a
    # DestinationRule workloadSelector that picks this sidecar, by its labels (`workload`: None
    # for every proxy no selector picks, so the common case stays shared).
    view = ctx.scope_key(proxy.namespace)
    labels = _labels(ctx, proxy) if proxy.type == ProxyType.SIDECAR else None
    workload = ctx.workload_key(proxy.namespace, labels)

    def build_shared() -> Resources:
        return _serialize(
            type_urls.CLUSTER,
            outbound_clusters(
                ctx,
                egress_services(ctx, proxy.namespace, sidecar),
                proxy.namespace,
                labels if workload is not None else None,
                auto_mtls=proxy.mesh_mtls,
            )
            + fixed_clusters(proxy),
        )

    shared_key = ("cds-shared", proxy.type, scope, view, workload, proxy.mesh_mtls)
    if not inbound:
        return _resources(shared_key, type_urls.CLUSTER, build_shared)

    def build() -> Resources:
        shared = _resources(shared_key, type_urls.CLUSTER, build_shared)
        own = _serialize(type_urls.CLUSTER, [inbound_cluster_for(p) for p in inbound])
        return dict(sorted({**shared, **own}.items()))

    return _resources(
        ("cds", proxy.type, scope, view, workload, proxy.mesh_mtls, inbound),
        type_urls.CLUSTER,
        build,
    )


# EDS: each cluster's assignment is an entry of its own (("cla", name): it depends on that
# service's endpoints), and the map of all of them is shared by every proxy ("eds"), unless a
# DestinationRule makes some assignments depend on the proxy's locality. Then ("eds-localized",
# scope) says which clusters, for a namespace view, and ("eds-variant", scope, LocalityView) is a
# copy of the shared map with their assignments for proxies at that locality: one per locality
# (and failoverPriority labels) in use, shared by the proxies there.


def _assignment(ctx: PushContext, name: str, service: Service, port: Any, labels: Any) -> Resource:
    return _cache().get(
        ("cla", name),
        lambda: to_resource(
            name, type_urls.ENDPOINT, load_assignment(name, ctx.endpoints(service, port, labels))
        ),
        kinds=ENDPOINT_KINDS,
        type_url=type_urls.ENDPOINT,
        name=name,
    )


EDS_KEY = ("eds",)
EDS_VARIANT = "eds-variant"


def _service_name(service: Service) -> str:
    return object_name("ServiceEntry" if service.type == "ServiceEntry" else "Service", service)


def _all_assignments(ctx: PushContext) -> Resources:
    def build() -> Resources:
        out: Resources = {}
        for service in ctx.services:
            for name, port, labels in eds_clusters(ctx, service):
                # One service's endpoints failing to translate leave out only its assignment.
                built = guarded(
                    partial(_assignment, ctx, name, service, port, labels),
                    _service_name(service),
                    dropped=f"endpoints of cluster {name}",
                )
                if built is not None:
                    out[name] = built
        return dict(sorted(out.items()))

    return _resources(EDS_KEY, type_urls.ENDPOINT, build, kinds=ENDPOINT_KINDS)


def _localized(ctx: PushContext, proxy: Proxy) -> tuple[str | None, LocalizedClusters]:
    scope = ctx.scope_key(proxy.namespace)
    return scope, memoized(
        ("eds-localized", scope), lambda: localized_clusters(ctx, proxy.namespace)
    )


def _localized_resource(name: str, endpoints: Any, policy: Any, view: Any) -> Resource:
    return to_resource(
        name, type_urls.ENDPOINT, localized_assignment(name, endpoints, policy, view)
    )


def _endpoints(ctx: PushContext, proxy: Proxy) -> Resources:
    scope, localized = _localized(ctx, proxy)
    if not localized.clusters:
        return _all_assignments(ctx)  # the common case: one map for every proxy
    view = locality_view(ctx, proxy, _labels(ctx, proxy), localized)

    def build() -> Resources:
        shared = _all_assignments(ctx)
        variant = dict(shared)  # same order: only values are replaced
        for name, cluster in localized.clusters.items():
            endpoints = ctx.endpoints(cluster.service, cluster.port, cluster.subset_labels)
            built = guarded(
                partial(_localized_resource, name, endpoints, cluster.policy, view),
                _service_name(cluster.service),
                dropped=f"locality-weighted endpoints of cluster {name}",
            )
            if built is None:
                variant.pop(name, None)
                continue
            # An assignment no different from the shared one keeps the shared Resource.
            same = shared.get(name)
            variant[name] = same if same is not None and same.version == built.version else built
        return variant

    return _resources((EDS_VARIANT, scope, view), type_urls.ENDPOINT, build)


def _gateway_key(ctx: PushContext, proxy: Proxy) -> tuple[str, frozenset[tuple[str, str]]]:
    # Gateway proxies of one namespace and labels select the same Gateways and Secrets.
    return proxy.namespace, frozenset(_labels(ctx, proxy).items())


def _listeners(ctx: PushContext, proxy: Proxy) -> Resources:
    if proxy.type == ProxyType.ROUTER:
        key = _gateway_key(ctx, proxy)
        return _resources(
            ("lds-gw", key),
            type_urls.LISTENER,
            lambda: _serialize(type_urls.LISTENER, gateway_listeners(ctx, key[0], dict(key[1]))),
        )
    sidecar, scope = _scope(ctx, proxy)
    shape = (
        "lds",
        proxy.interception_mode,
        proxy.namespace,
        scope,
        inbound_ports(ctx, proxy),
        inbound_policy_key(ctx, proxy),
        # PeerAuthentication: the mode the workload's policies compose to, and whether the
        # proxy can terminate mesh mTLS at all.
        inbound_mtls(ctx, proxy),
        proxy.mesh_mtls,
    )
    return _resources(
        shape,
        type_urls.LISTENER,
        lambda: _serialize(
            type_urls.LISTENER,
            sidecar_listeners(ctx, proxy, sidecar, _registry_only(ctx, sidecar)),
        ),
    )


def _routes(ctx: PushContext, proxy: Proxy) -> Resources:
    if proxy.type == ProxyType.ROUTER:
        gw = _gateway_key(ctx, proxy)
        return _resources(
            ("rds-gw", gw),
            type_urls.ROUTE,
            lambda: _serialize(type_urls.ROUTE, gateway_route_configs(ctx, gw[0], dict(gw[1]))),
        )
    sidecar, scope = _scope(ctx, proxy)
    key: tuple[Hashable, ...] = ("rds", proxy.interception_mode, proxy.namespace, scope)
    if ctx.source_matched:
        # Some route applies only to some workloads: routes differ by the caller's labels.
        key += (frozenset(proxy.labels.items()),)
    return _resources(
        key,
        type_urls.ROUTE,
        lambda: _serialize(
            type_urls.ROUTE,
            outbound_route_configs(ctx, proxy, sidecar, _registry_only(ctx, sidecar)),
        ),
    )


def _secrets(ctx: PushContext, proxy: Proxy) -> Resources:
    # Only the Secrets of the namespace (read and recorded by credential_secrets) that the
    # proxy's Gateways and DestinationRules reference (structural kinds): gateway proxies of one
    # namespace and labels share them, as do the sidecars of a namespace.
    shape = _gateway_key(ctx, proxy) if proxy.type == ProxyType.ROUTER else (proxy.namespace,)
    return _resources(
        ("sds", proxy.type == ProxyType.ROUTER, shape),
        type_urls.SECRET,
        lambda: _serialize(type_urls.SECRET, proxy_credentials(ctx, proxy)),
    )


_GENERATORS: dict[str, Callable[[PushContext, Proxy], Resources]] = {
    type_urls.CLUSTER: _clusters,
    type_urls.ENDPOINT: _endpoints,
    type_urls.LISTENER: _listeners,
    type_urls.ROUTE: _routes,
    type_urls.SECRET: _secrets,
}


class ConfigGenerator:
    """Generates for the live server: results are shared by proxies and across pushes through
    `cache`, which the Pusher advances from one PushContext to the next."""

    def __init__(self, cache: ResourceCache | None = None) -> None:
        self.cache = cache if cache is not None else ResourceCache()

    def __call__(self, ctx: PushContext, proxy: Proxy, type_url: str) -> Resources:
        """Every resource of `type_url` this proxy should see, by name. Unknown types: none."""
        generator = _GENERATORS.get(type_url)
        if generator is None:
            return {}
        return self.cache.serve(ctx, lambda: generator(ctx, proxy))


def _cache() -> ResourceCache:
    cache = active_cache()
    assert cache is not None, "generators run inside ResourceCache.serving"
    return cache


# Offline callers (render, tests): one cache per context, living as long as the context does.
_offline: weakref.WeakKeyDictionary[PushContext, ConfigGenerator] = weakref.WeakKeyDictionary()


def offline_generator(ctx: PushContext) -> ConfigGenerator:
    """The generator `generate` uses for `ctx` (and its cache, which tests inspect)."""
    generator = _offline.get(ctx)
    if generator is None:
        generator = _offline[ctx] = ConfigGenerator()
    return generator


def generate(ctx: PushContext, proxy: Proxy, type_url: str) -> Resources:
    """Every resource of `type_url` this proxy should see, by name, outside the live server:
    work is shared by the calls for one context (and dropped with it)."""
    return offline_generator(ctx)(ctx, proxy, type_url)


def message_class(type_url: str) -> type[message.Message] | None:
    from google.protobuf import symbol_database

    try:
        return symbol_database.Default().GetSymbol(type_url.removeprefix("type.googleapis.com/"))
    except KeyError:
        return None
