"""The push pipeline end to end over real gRPC: store change → Pusher (new PushContext, cache
advanced, decision) → ADS streams → what each client receives. What a change sends follows from
what the cached resources depend on: endpoints, one Secret, one Pod's labels."""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc

from istiolite import type_urls
from istiolite.model.proxy import parse_proxy
from istiolite.model.store import ConfigStore
from istiolite.networking.generator import ConfigGenerator, generate
from istiolite.push.cache import ResourceCache
from istiolite.push.context import PushContext
from istiolite.push.pusher import Pusher
from istiolite.push.request import PushRequest
from istiolite.xds.ads import AdsService
from tests.protocol.harness import XdsClient, make_node, resources, types_of
from tests.support import objects
from tests.support.certs import CertificateAuthority, tls_secret

DOMAIN = objects.DOMAIN
ALL_TYPES = type_urls.PUSH_ORDER


@dataclass
class Mesh:
    """A store, the Pusher and the ADS server as the live server wires them, on 127.0.0.1."""

    store: ConfigStore
    cache: ResourceCache
    ads: AdsService
    pusher: Pusher
    stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub
    clients: list[XdsClient] = field(default_factory=list)

    def change(self, source: str, raws: Iterable[objects.Raw]) -> PushRequest:
        changes = self.store.replace_source(source, objects.parse(*raws))
        return self.pusher.push([(time.monotonic(), changes)])

    async def connect(self, node_id: str, labels: dict[str, str] | None = None) -> XdsClient:
        """A Delta or SotW client (alternating) subscribed to everything its proxy gets."""
        delta = len(self.clients) % 2 == 1
        namespace = node_id.split("~")[3].split(".")[0]
        labels = labels or {"app": "app-1"}
        node = make_node(node_id, namespace=namespace, labels=labels)
        client = XdsClient(self.stub, delta=delta, node=node)
        self.clients.append(client)
        proxy = parse_proxy(
            node_id, {"NAMESPACE": namespace, "LABELS": labels, "INTERCEPTION_MODE": "REDIRECT"}
        )
        for type_url in ALL_TYPES:
            names = list(generate(self.pusher.context, proxy, type_url))
            if type_url in type_urls.FULL_STATE_TYPES:
                names = []  # wildcard
            elif not names:
                continue
            await client.fetch(type_url, names)
        await client.collect()
        return client


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    store = ConfigStore()
    cache = ResourceCache()
    ads = AdsService(
        PushContext({}, domain=DOMAIN, version="empty"),
        generator=ConfigGenerator(cache),
        dev_plaintext_sds=True,  # the gateway's credentials, to a loopback client
    )
    pusher = Pusher(
        store, cache, domain=DOMAIN, publish=ads.update, connected=lambda: len(ads.connections)
    )
    pusher.start()
    server = grpc.aio.server()
    ads.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    state = Mesh(store, cache, ads, pusher, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel))
    try:
        yield state
    finally:
        for client in state.clients:
            await client.aclose()
        await channel.close()
        await server.stop(grace=None)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def _slice(i: int, generation: int) -> objects.Raw:
    # Two endpoints; the second one's address moves with every generation.
    return objects.endpoint_slice(
        f"svc-{i}",
        endpoints=[
            f"10.{i // 250}.{i % 250}.1",
            f"10.{100 + i // 250}.{i % 250}.{generation % 250}",
        ],
        ports=[("http", 8080)],
    )


@pytest.mark.slow
async def test_endpoint_only_pushes_keep_the_cache_and_memory_flat(mesh: Mesh) -> None:
    services = 200
    mesh.change(
        "services",
        [
            objects.service(f"svc-{i}", ports=[objects.service_port("http", 80)])
            for i in range(services)
        ],
    )
    slices = {i: _slice(i, 0) for i in range(services)}
    mesh.change("endpoints", slices.values())
    for n in range(40):  # 20 SotW, 20 Delta
        await mesh.connect(f"sidecar~10.9.0.{n + 1}~client-{n}.default~default.svc.{DOMAIN}")

    measured: dict[int, tuple[int, int, int]] = {}
    for push in range(1, 301):
        i = push % services
        slices[i] = _slice(i, push)
        request = mesh.change("endpoints", slices.values())
        assert not request.full and request.eds_clusters == {
            objects.outbound_cluster(f"svc-{i}", 80)
        }
        for client in mesh.clients:
            got = await client.recv(type_urls.ENDPOINT)
            client.ack(got)
            assert set(resources(got)) == {objects.outbound_cluster(f"svc-{i}", 80)}
            client.received.clear()  # the test's own record must not grow either
        if push in (50, 300):
            await asyncio.sleep(0.05)  # the ACKs are read
            gc.collect()
            measured[push] = (len(mesh.cache), len(mesh.ads.memo), _rss_kib())
    (cache_50, memo_50, rss_50), (cache_300, memo_300, rss_300) = measured[50], measured[300]
    print(f"after 50 / 300 pushes (cache entries, memo entries, RSS KiB): {measured}")
    assert cache_300 == cache_50, "the resource cache grows with endpoint-only pushes"
    assert memo_300 == memo_50, "the per-push comparison memo outlives its push"
    # Before the cache was dependency-keyed, each push here kept ~73 KiB (~18 MiB over these
    # 250 pushes). Allocator noise stays well under this bound.
    assert rss_300 - rss_50 < 6 * 1024, f"RSS grew {rss_300 - rss_50} KiB over 250 pushes"


GATEWAY_LABELS = {"istio": "ingressgateway"}


def _gateway_namespace(ns: str, secret: objects.Raw) -> list[objects.Raw]:
    gateway = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": ns},
        "spec": {
            "selector": GATEWAY_LABELS,
            "servers": [
                {
                    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                    "hosts": [f"{ns}.example.com"],
                    "tls": {"mode": "SIMPLE", "credentialName": "cert"},
                }
            ],
        },
    }
    return [gateway, secret]


async def test_a_secret_change_resends_only_the_gateway_resources_that_use_it(mesh: Mesh) -> None:
    ca = CertificateAuthority("push pipeline test CA")
    pairs = {ns: ca.issue(f"{ns}.example.com", dns=(f"{ns}.example.com",)) for ns in ("a", "b")}
    mesh.change("web", [objects.service("web", ports=[objects.service_port("http", 80)])])
    for ns in ("a", "b"):
        mesh.change(ns, _gateway_namespace(ns, tls_secret("cert", ns, pairs[ns])))
    gw_a = await mesh.connect(f"router~10.9.1.1~gw-0.a~a.svc.{DOMAIN}", GATEWAY_LABELS)
    gw_b = await mesh.connect(f"router~10.9.1.2~gw-0.b~b.svc.{DOMAIN}", GATEWAY_LABELS)
    sidecar = await mesh.connect(f"sidecar~10.9.1.3~app-0.default~default.svc.{DOMAIN}")
    assert {r.type_url for r in gw_a.received} >= {type_urls.LISTENER, type_urls.SECRET}

    # Rotate a's certificate.
    rotated = ca.issue("a.example.com", dns=("a.example.com",))
    request = mesh.change("a", _gateway_namespace("a", tls_secret("cert", "a", rotated)))
    status = mesh.pusher.status
    # Only what reads that Secret was rebuilt: a's SDS, and its gateway listeners and routes
    # (a server whose Secret is unusable is left out of both); no cluster or endpoint, and
    # nothing of b's (one entry per type).
    assert status["dropped"] == {"SDS": 1, "LDS": 1, "RDS": 1}, status["dropped"]
    assert request.full

    got = await gw_a.drain()
    assert types_of(got) == ["SDS"]  # the listener, rebuilt, came out the same
    secret = resources(got[0])["kubernetes://cert"]
    assert secret.tls_certificate.certificate_chain.inline_bytes == rotated.cert_pem
    await gw_b.expect_silence()
    await sidecar.expect_silence()


def _subset_mesh(labels_of_web_1: dict[str, str]) -> list[objects.Raw]:
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "host": "web",
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    }
    return [
        objects.service("web", ports=[objects.service_port("http", 80, target_port=8080)]),
        rule,
        objects.pod("web-0", ip="10.0.0.1", labels={"app": "web", "version": "v1"}),
        objects.pod("web-1", ip="10.0.0.2", labels=labels_of_web_1),
        objects.endpoint_slice(
            "web",
            endpoints=[
                objects.endpoint("10.0.0.1", pod="web-0"),
                objects.endpoint("10.0.0.2", pod="web-1"),
            ],
            ports=[("http", 8080)],
        ),
        objects.service("other", ports=[objects.service_port("http", 80)]),
        objects.endpoint_slice("other", endpoints=["10.0.1.1"], ports=[("http", 80)]),
    ]


@pytest.mark.parametrize("clients", [2], ids=["sotw+delta"])
async def test_a_pod_label_change_sends_only_the_eds_of_the_subset_it_alters(
    mesh: Mesh, clients: int
) -> None:
    mesh.change("mesh", _subset_mesh({"app": "web", "version": "v2"}))
    watchers = [
        await mesh.connect(f"sidecar~10.9.2.{n}~client-{n}.default~default.svc.{DOMAIN}")
        for n in range(clients)
    ]
    # web-1 leaves subset v2 (there is no v3); v1 and the whole-service cluster keep their pods.
    request = mesh.change("mesh", _subset_mesh({"app": "web", "version": "v3"}))
    assert not request.full
    v2 = "outbound|80|v2|web.default.svc.cluster.local"
    assert v2 in request.eds_clusters
    assert objects.outbound_cluster("other", 80) not in request.eds_clusters
    for watcher in watchers:
        got = await watcher.drain()
        assert types_of(got) == ["EDS"]
        assert list(resources(got[0])) == [v2]
        # web-0 is v1 and web-1 now v3: subset v2 has no endpoints left.
        assignment: Any = resources(got[0])[v2]
        assert [e for group in assignment.endpoints for e in group.lb_endpoints] == []
