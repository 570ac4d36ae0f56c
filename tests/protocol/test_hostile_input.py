"""What ADS clients say is bounded: metric labels, node sizes, NACK messages, type URLs per
stream, message size, and the intern table of subscription names."""

from __future__ import annotations

import asyncio
import gc

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from istiolite import metrics
from istiolite.server import GRPC_OPTIONS
from istiolite.xds import protocol
from istiolite.xds.ads import AdsService
from tests.protocol.harness import CDS, EDS, XdsClient, XdsHarness, make_node, mesh
from tests.support import objects

PREFIX = "type.googleapis.com/attacker.Type"


def _versioned_node(i: int, version: str) -> object:
    node = make_node(f"sidecar~10.8.{i // 250}.{i % 250}~app-{i}.default~default.svc.cluster.local")
    node.metadata.update({"ISTIO_VERSION": version})
    return node


async def test_unknown_type_urls_and_versions_leave_metrics_small(xds: XdsHarness) -> None:
    """20,000 distinct unknown type URLs (100 on each of 200 streams, each stream with its own
    ISTIO_VERSION): /metrics stays under 100 KB, and the versions are forgotten as they leave."""
    clients: list[XdsClient] = []
    for i in range(200):
        version = f"1.{i}.0" if i % 2 else f"weird-{i}-{'v' * 50}"
        client = xds.connect(delta=False, node=_versioned_node(i, version))
        clients.append(client)
        for n in range(100):
            client.request(f"{PREFIX}{i}x{n}", [])
    await xds.wait_until(
        lambda: sum(len(c.stream.types) for c in xds.ads.connections.values()) == 20_000,
        "20,000 subscriptions",
        within=120,
    )
    body, _ = metrics.exposition()
    assert len(body) < 100_000, len(body)
    text = body.decode()
    assert 'pilot_xds_pushes{type="other"}' in text
    assert "attacker" not in text
    assert 'pilot_xds{version="other"}' in text
    for client in clients:
        await client.aclose()
    xds.clients.clear()
    await xds.wait_for_connections(0, within=30)
    text = metrics.exposition()[0].decode()
    assert "pilot_xds{" not in text.replace('pilot_xds{version="unknown"}', "")


async def test_a_stream_may_not_subscribe_to_unbounded_type_urls(
    xds: XdsHarness, sotw: XdsClient
) -> None:
    for n in range(protocol.TYPES_PER_STREAM_MAX + 1):
        sotw.request(f"{PREFIX}{n}", [])
    err = await sotw.error(within=30)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"the limit is {protocol.TYPES_PER_STREAM_MAX}" in (err.details() or "")


async def test_oversized_node_id_fails_the_stream_naming_the_limit(xds: XdsHarness) -> None:
    node = make_node("sidecar~10.0.0.1~" + "a" * 1_000_000 + ".default~default.svc.cluster.local")
    client = xds.connect(delta=False, node=node)
    client.request(CDS, [])
    err = await client.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    expected = f"node.id is {len(node.id)} bytes, over the limit of 1024 bytes"
    assert expected in (err.details() or "")


async def test_oversized_node_metadata_fails_the_stream(xds: XdsHarness) -> None:
    node = make_node()
    node.metadata.update({"BLOB": "b" * 70_000})
    client = xds.connect(delta=True, node=node)
    client.delta_request(CDS)
    err = await client.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node.metadata is" in (err.details() or "")
    assert "over the limit of 65536 bytes" in (err.details() or "")


async def test_nack_message_is_kept_and_logged_cut(
    xds: XdsHarness, sotw: XdsClient, capsys: pytest.CaptureFixture[str]
) -> None:
    response = await sotw.fetch(CDS)
    sotw.nack(response, "E" * 2_000_000)
    await xds.wait_until(lambda: xds.state(CDS).nack is not None, "the NACK recorded")
    nack = xds.state(CDS).nack
    assert nack is not None
    assert len(nack.message) < 1_100
    assert nack.message.endswith("(2000000 characters)")
    out = capsys.readouterr().out
    assert "E" * 1025 not in out
    assert "(2000000 characters)" in out


async def test_name_sets_are_freed_with_their_last_stream(xds: XdsHarness) -> None:
    """256 Delta streams with 5k names each: once they close, the intern table holds none of
    their sets."""
    gc.collect()
    before = protocol.interned_name_sets()
    clients = []
    for i in range(256):
        client = xds.connect(delta=True, node=_versioned_node(i, "1.24.0"))
        client.delta_request(EDS, subscribe=[f"outbound|80||svc-{i}-{n}.x" for n in range(5000)])
        clients.append(client)
    await xds.wait_until(
        lambda: sum(1 for c in xds.ads.connections.values() if EDS in c.stream.types) == 256,
        "256 subscriptions",
        within=120,
    )
    assert protocol.interned_name_sets() >= before + 256
    for client in clients:
        await client.aclose()
    xds.clients.clear()
    await xds.wait_for_connections(0, within=30)
    gc.collect()
    assert protocol.interned_name_sets() == before
    assert not any(
        "svc-1-1.x" in ref_set
        for ref in list(protocol._NAME_SETS.values())
        if (ref_set := ref()) is not None
    )


async def test_default_receive_limit_is_four_mib() -> None:
    """A 5 MB request is refused by the server with its default options (istiod: 4 MiB)."""
    ads = AdsService(objects.context(*mesh()))
    server = grpc.aio.server(options=GRPC_OPTIONS)
    ads.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        request = discovery_pb2.DiscoveryRequest(type_url=CDS, node=make_node())
        request.node.metadata.update({"x": "y" * 5_000_000})
        await call.write(request)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call.read(), 10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await channel.close()
        await server.stop(grace=None)


def test_istio_versions_fold_into_other_beyond_the_bound() -> None:
    labels = [metrics.xds_client_connected(f"9.{n}.1") for n in range(50)]
    labels += [metrics.xds_client_connected("not a version\n" + "x" * 500)]
    assert len(set(labels)) <= metrics.VERSION_LABELS_MAX + 1
    assert labels[-1] == "other"
    assert "other" in labels[:-1]
    for label in labels:
        metrics.xds_client_disconnected(label)
    assert "9.0.1" not in metrics.exposition()[0].decode()
