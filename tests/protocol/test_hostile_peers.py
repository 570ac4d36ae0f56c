"""Hostile ADS peers over real gRPC: streams that never read (a zero flow-control window) must
not hold up other proxies' config, a peer that sends without reading must not grow the server,
and what clients say about themselves is bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from istiolite import metrics
from istiolite.model.proxy import Proxy
from istiolite.networking.generator import generate
from istiolite.networking.resource import to_resource
from istiolite.xds.ads import AdsService
from tests.protocol.harness import CDS, EDS, REVIEWS, XdsClient, make_node, mesh
from tests.support import objects

BAD_PREFIX = "sidecar~10.9."
# Far larger than a client's default 64 KiB stream window: a peer that does not read cannot take it.
BIG_CLUSTER = to_resource("big", CDS, cluster_pb2.Cluster(name="big", alt_stat_name="x" * 300_000))
# What "does not delay a push beyond the debounce" means here: generous, far below the 27 s seen.
PUSH_BOUND = 3.0


@dataclass
class Server:
    ads: AdsService
    port: int
    big: dict[str, bool]

    def stub(self, channel: grpc.aio.Channel) -> ads_pb2_grpc.AggregatedDiscoveryServiceStub:
        return ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)


def _generator(big: dict[str, bool]) -> Callable[[Any, Proxy, str], Any]:
    def generator(ctx: Any, proxy: Proxy, type_url: str) -> Any:
        out = generate(ctx, proxy, type_url)
        if big["on"] and type_url == CDS and proxy.id.startswith(BAD_PREFIX):
            return {**out, "big": BIG_CLUSTER}
        return out

    return generator


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    big = {"on": False}
    ads = AdsService(objects.context(*mesh()), generator=_generator(big))
    grpc_server = grpc.aio.server()
    ads.register(grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        yield Server(ads, port, big)
    finally:
        await grpc_server.stop(grace=None)


def _channel(port: int) -> grpc.aio.Channel:
    # No BDP probing: the stream window stays at its initial 64 KiB unless the client reads.
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.http2.bdp_probe", 0)])


def _bad_node(i: int) -> Any:
    return make_node(f"{BAD_PREFIX}{i // 250}.{i % 250}~bad-{i}.default~default.svc.cluster.local")


class SilentPeer:
    """ADS streams on one connection that send requests and never read a response."""

    def __init__(self, port: int) -> None:
        self.channel = _channel(port)
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.calls: list[Any] = []
        self._stop = asyncio.Event()

    def open(self, requests: list[discovery_pb2.DiscoveryRequest]) -> None:
        async def send() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
            for request in requests:
                yield request
            await self._stop.wait()

        self.calls.append(self.stub.StreamAggregatedResources(send()))

    async def close(self) -> None:
        self._stop.set()
        for call in self.calls:
            call.cancel()
        await self.channel.close()


async def _wait(condition: Callable[[], bool], what: str, within: float) -> float:
    """Seconds until `condition` holds; fails after `within`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def _cds(i: int) -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(type_url=CDS, node=_bad_node(i))


async def _good_client(server: Server, channel: grpc.aio.Channel) -> XdsClient:
    client = XdsClient(server.stub(channel), delta=False, node=make_node())
    await client.fetch(CDS)
    await client.fetch(EDS, [REVIEWS])
    return client


async def test_streams_that_never_read_do_not_hold_up_another_proxys_push(
    server: Server,
) -> None:
    """100 streams on one connection stop reading while a push to them is being written: they
    each take a push slot (all 100 of them), yet a well-behaved proxy still gets its endpoint
    change at once; after the send timeout the stuck streams are closed and counted."""
    good_channel = _channel(server.port)
    peer = SilentPeer(server.port)
    timeouts_before = metrics.SEND_TIMEOUTS.value()
    try:
        for i in range(100):
            peer.open([_cds(i)])  # the small first answer fits in the window
        await _wait(lambda: len(server.ads.connections) == 100, "100 connections", 10)
        # Connected last, so it is the last in line for a push slot.
        good = await _good_client(server, good_channel)
        await _wait(
            lambda: all(c.stream.types for c in server.ads.connections.values()),
            "every first request handled",
            10,
        )
        server.big["on"] = True  # the next push to the silent streams cannot be written
        server.ads.update(objects.context(*mesh(reviews_endpoints=["10.1.0.9"])))
        start = time.monotonic()
        response = await good.recv(EDS, within=PUSH_BOUND)
        elapsed = time.monotonic() - start
        assert elapsed < PUSH_BOUND
        assert [e.endpoint.address.socket_address.address for e in _lb(response)] == ["10.1.0.9"]
        # The stuck streams are closed after the send timeout (5 s), each counted once.
        await _wait(lambda: len(server.ads.connections) == 1, "the stuck streams closed", 15)
        assert metrics.SEND_TIMEOUTS.value() - timeouts_before == 100
        await good.aclose()
    finally:
        await peer.close()
        await good_channel.close()


async def test_first_answers_to_silent_streams_do_not_block_a_new_proxy(server: Server) -> None:
    """100 streams whose very first answer cannot be written (answers are outside the push
    throttle): a proxy connecting meanwhile gets its config at once."""
    server.big["on"] = True
    peer = SilentPeer(server.port)
    good_channel = _channel(server.port)
    try:
        for i in range(100):
            peer.open([_cds(i)])
        await _wait(lambda: len(server.ads.connections) == 100, "100 connections", 10)
        await asyncio.sleep(0.3)  # their writes are now waiting on the peer
        start = time.monotonic()
        good = await _good_client(server, good_channel)
        assert time.monotonic() - start < PUSH_BOUND
        server.ads.update(objects.context(*mesh(reviews_endpoints=["10.1.0.9"])))
        await good.recv(EDS, within=PUSH_BOUND)
        await good.aclose()
    finally:
        await peer.close()
        await good_channel.close()


async def test_a_peer_sending_without_reading_is_held_at_the_inbound_bound(
    server: Server,
) -> None:
    """The server stops reading a stream whose handler is stuck on a write: its backlog of
    requests stays at the bound (100) however many the peer sends."""
    server.big["on"] = True
    server.ads.send_timeout = 30.0  # keep the stream stuck for the whole test
    peer = SilentPeer(server.port)
    first = _cds(0)
    # 300 requests of ~1 KiB (each names new clusters): all of them fit in the transport's window.
    flood = [
        discovery_pb2.DiscoveryRequest(type_url=EDS, resource_names=[f"c{n}-{'x' * 1000}"])
        for n in range(300)
    ]
    try:
        peer.open([first, *flood])
        await _wait(lambda: len(server.ads.connections) == 1, "the connection", 10)
        conn = next(iter(server.ads.connections.values()))
        depths = []
        for _ in range(20):
            await asyncio.sleep(0.1)
            depths.append(conn.queue.qsize())
        assert max(depths) >= 100, depths  # the peer did fill it
        assert max(depths) <= 101, depths  # and it went no further
    finally:
        await peer.close()


def _lb(response: Any) -> list[Any]:
    from tests.protocol.harness import resources

    (cla,) = resources(response).values()
    return [e for group in cla.endpoints for e in group.lb_endpoints]
