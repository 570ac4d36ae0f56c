"""outboundTrafficPolicy from the mesh config: the default of every sidecar that no Sidecar
resource gives a mode, and a change of it is a full push whose listeners and routes are built
again (not served from the cache of the previous mode)."""

from __future__ import annotations

import time

from envoy.config.listener.v3.listener_pb2 import Listener

from istiolite import type_urls
from istiolite.model.mesh_config import MESH_CONFIG_KEY, MeshConfig
from istiolite.model.store import ConfigStore
from istiolite.networking.generator import ConfigGenerator
from istiolite.push.cache import ResourceCache
from istiolite.push.context import PushContext
from istiolite.push.pusher import Pusher
from istiolite.push.request import PushRequest
from tests.support.objects import parse, service, service_port
from tests.unit.networking.helpers import listeners, sidecar, tcp_proxy

DOMAIN = "cluster.local"
SHOP_SIDECAR = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Sidecar",
    "metadata": {"name": "default", "namespace": "shop"},
    "spec": {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}},
}


def _catchall(ctx: PushContext, namespace: str, generate: ConfigGenerator | None = None) -> str:
    """Where virtualOutbound sends what no listener of a known service catches."""
    proxy = sidecar(namespace)
    if generate is None:
        found = listeners(ctx, proxy)["virtualOutbound"]
    else:
        payload = generate(ctx, proxy, type_urls.LISTENER)["virtualOutbound"].payload
        found = Listener.FromString(payload)
    (chain,) = [c for c in found.filter_chains if c.name == "virtualOutbound-catchall-tcp"]
    proxied = tcp_proxy(chain)
    assert proxied is not None
    return str(proxied.cluster)


def _context(mode: str | None, *raws: dict[str, object]) -> PushContext:
    objects = parse(service("web", "shop", ports=[service_port("http", 80)]), *raws)
    if mode is not None:
        objects[MESH_CONFIG_KEY] = MeshConfig(outbound_mode=mode)
    return PushContext(objects, domain=DOMAIN, version="v1")


def test_the_mesh_default_applies_to_sidecars_without_a_mode() -> None:
    assert _catchall(_context(None), "shop") == "PassthroughCluster"
    assert _catchall(_context("ALLOW_ANY"), "shop") == "PassthroughCluster"
    assert _catchall(_context("REGISTRY_ONLY"), "shop") == "BlackHoleCluster"


def test_a_sidecars_own_mode_wins_over_the_mesh_default() -> None:
    ctx = _context("REGISTRY_ONLY", SHOP_SIDECAR)
    assert _catchall(ctx, "shop") == "PassthroughCluster"
    assert _catchall(ctx, "other") == "BlackHoleCluster"


def test_changing_the_mesh_config_is_a_full_push_with_new_listeners() -> None:
    store = ConfigStore()
    store.replace_source("files", parse(service("web", "shop", ports=[service_port("http", 80)])))
    store.replace_source("mesh-config", {MESH_CONFIG_KEY: MeshConfig()})
    cache = ResourceCache()
    generate = ConfigGenerator(cache)
    published: list[tuple[PushContext, PushRequest]] = []
    pusher = Pusher(
        store, cache, domain=DOMAIN, publish=lambda ctx, req: published.append((ctx, req))
    )
    pusher.start()
    assert _catchall(published[-1][0], "shop", generate) == "PassthroughCluster"

    changes = store.replace_source(
        "mesh-config", {MESH_CONFIG_KEY: MeshConfig(outbound_mode="REGISTRY_ONLY")}
    )
    request = pusher.push([(time.monotonic(), changes)])

    assert request.full
    assert _catchall(published[-1][0], "shop", generate) == "BlackHoleCluster"


def test_every_context_the_pusher_builds_keeps_serves_trust_domain() -> None:
    """The SANs clusters verify are in the CA's trust domain (serve's), not the DNS domain,
    on the first push and after a full or an endpoint-only rebuild."""
    store = ConfigStore()
    store.replace_source("files", parse(service("web", "shop", ports=[service_port("http", 80)])))
    published: list[PushContext] = []
    pusher = Pusher(
        store,
        ResourceCache(),
        domain=DOMAIN,
        trust_domain="example.org",
        publish=lambda ctx, req: published.append(ctx),
    )
    pusher.start()
    changes = store.replace_source(
        "mesh-config", {MESH_CONFIG_KEY: MeshConfig(outbound_mode="REGISTRY_ONLY")}
    )
    pusher.push([(time.monotonic(), changes)])
    assert [ctx.trust_domain for ctx in published] == ["example.org", "example.org"]
