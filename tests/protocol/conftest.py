"""Fixtures: a real grpc.aio ADS server on 127.0.0.1 (port 0) serving the test mesh."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc

from istiolite.xds.ads import AdsService
from tests.protocol.harness import XdsClient, XdsHarness, mesh
from tests.support import objects


@pytest.fixture
async def xds() -> AsyncIterator[XdsHarness]:
    """Server + channel for one test; every stream, the channel and the server are torn down
    even when the test fails."""
    ads = AdsService(objects.context(*mesh()))
    server = grpc.aio.server()
    ads.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    harness = XdsHarness(ads, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel))
    try:
        yield harness
    finally:
        for client in harness.clients:
            await client.aclose()
        await channel.close()
        await server.stop(grace=None)


@pytest.fixture
async def sotw(xds: XdsHarness) -> XdsClient:
    return xds.connect(delta=False)


@pytest.fixture
async def delta(xds: XdsHarness) -> XdsClient:
    return xds.connect(delta=True)
