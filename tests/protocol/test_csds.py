"""CSDS (envoy.service.status.v3.ClientStatusDiscoveryService) over real ADS conversations.

In-process: one grpc.aio server on 127.0.0.1 serving ADS and CSDS from the same AdsService; ADS
clients from the protocol harness hold the conversations, a CSDS stub asks what istiolite sees.
At the end, a real Envoy against `istiolite serve`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2

from istiolite import type_urls
from istiolite.model.proxy import Proxy
from istiolite.networking.generator import generate
from istiolite.networking.resource import Resource, to_resource
from istiolite.xds.ads import AdsService
from istiolite.xds.csds import CsdsService
from tests.protocol.harness import (
    BASE_CLUSTERS,
    BASE_LISTENERS,
    CDS,
    DETAILS,
    EDS,
    LDS,
    NODE_ID,
    RATINGS,
    RDS,
    REVIEWS,
    XdsClient,
    XdsHarness,
    decode,
    make_node,
    mesh,
    resource_names,
)
from tests.support import mesh as mesh_files
from tests.support import objects
from tests.support.processes import EnvoyProcess, IstioliteProcess, http_get, stop_all
from tests.support.wait import wait_for

SDS = type_urls.SECRET
OTHER_ID = "sidecar~10.0.0.2~app-2.other~other.svc.cluster.local"
PRIVATE_KEY = "-----BEGIN EC PRIVATE KEY-----\nnot-really-a-key-but-secret\n"

ConfigStatus = csds_pb2.ConfigStatus
ClientStatus = config_dump_shared_pb2.ClientResourceStatus
SYNCED, STALE, ERROR, NOT_SENT = (
    csds_pb2.SYNCED,
    csds_pb2.STALE,
    csds_pb2.ERROR,
    csds_pb2.NOT_SENT,
)
ACKED, NACKED, REQUESTED, DOES_NOT_EXIST = (
    config_dump_shared_pb2.ACKED,
    config_dump_shared_pb2.NACKED,
    config_dump_shared_pb2.REQUESTED,
    config_dump_shared_pb2.DOES_NOT_EXIST,
)


def with_secrets(ctx: Any, proxy: Proxy, type_url: str) -> Mapping[str, Resource]:
    """The real generators, plus an SDS `default` secret carrying a private key."""
    if type_url != SDS:
        return generate(ctx, proxy, type_url)
    secret = secret_pb2.Secret(
        name="default",
        tls_certificate=common_pb2.TlsCertificate(
            private_key=base_pb2.DataSource(inline_string=PRIVATE_KEY),
            certificate_chain=base_pb2.DataSource(inline_string="CERT"),
        ),
    )
    return {"default": to_resource("default", SDS, secret)}


@dataclass
class Env:
    xds: XdsHarness
    csds: csds_pb2_grpc.ClientStatusDiscoveryServiceStub

    async def fetch(self, *matchers: node_pb2.NodeMatcher, **fields: Any) -> Any:
        request = csds_pb2.ClientStatusRequest(node_matchers=list(matchers), **fields)
        return await self.csds.FetchClientStatus(request, timeout=5)

    async def only(self, **fields: Any) -> csds_pb2.ClientConfig:
        response = await self.fetch(**fields)
        assert len(response.config) == 1, [c.node.id for c in response.config]
        return response.config[0]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    # Secrets to a loopback client: the development mode of the plaintext port.
    ads = AdsService(objects.context(*mesh()), generator=with_secrets, dev_plaintext_sds=True)
    server = grpc.aio.server()
    ads.register(server)
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
        CsdsService(ads, generator=with_secrets), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    harness = XdsHarness(ads, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel))
    try:
        yield Env(harness, csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel))
    finally:
        for client in harness.clients:
            await client.aclose()
        await channel.close()
        await server.stop(grace=None)


def by_key(config: csds_pb2.ClientConfig) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for entry in config.generic_xds_configs:
        key = (entry.type_url, entry.name)
        assert key not in out, f"duplicate entry {key}"
        out[key] = entry
    return out


def names_of(config: csds_pb2.ClientConfig, type_url: str) -> list[str]:
    return [e.name for e in config.generic_xds_configs if e.type_url == type_url]


def node_id_exact(node_id: str) -> node_pb2.NodeMatcher:
    return node_pb2.NodeMatcher(node_id={"exact": node_id})


async def subscribe_all(env: Env, client: XdsClient) -> list[Any]:
    """CDS, EDS for the two clusters, LDS, RDS for the two routes; each ACKed and recorded."""
    responses = [
        await client.fetch(CDS),
        await client.fetch(EDS, [REVIEWS, DETAILS]),
        await client.fetch(LDS),
        await client.fetch(RDS, ["9080", "9081"]),
    ]
    for response in responses:
        await env.xds.wait_acked(response)
    return responses


def sent_versions(env: Env, type_url: str) -> dict[str, str]:
    return dict(env.xds.state(type_url).sent)


# -- ACKed: SYNCED ---------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_acked_proxy_shows_every_resource_acked_and_synced(env: Env, delta: bool) -> None:
    client = env.xds.connect(delta=delta)
    await subscribe_all(env, client)

    config = await env.only()
    assert config.node.id == NODE_ID
    assert config.node.metadata.fields["NAMESPACE"].string_value == "default"
    assert names_of(config, CDS) == BASE_CLUSTERS
    assert names_of(config, EDS) == sorted([REVIEWS, DETAILS])
    assert names_of(config, LDS) == sorted(BASE_LISTENERS)
    assert names_of(config, RDS) == ["9080", "9081"]
    # Types in push order: CDS, EDS, LDS, RDS.
    order = [e.type_url for e in config.generic_xds_configs]
    assert order == sorted(order, key=type_urls.push_rank)
    for entry in config.generic_xds_configs:
        what = f"{type_urls.short_name(entry.type_url)} {entry.name}"
        assert entry.client_status == ACKED, what
        assert entry.config_status == SYNCED, what
        assert not entry.HasField("error_state"), what
        assert entry.last_updated.seconds > 0, what
        assert entry.version_info == sent_versions(env, entry.type_url)[entry.name], what
        # The body is the resource itself, and its name is the entry's name.
        assert entry.xds_config.type_url == entry.type_url
        message = decode(entry.type_url, entry.xds_config.value)
        inner = message.cluster_name if entry.type_url == EDS else message.name
        assert inner == entry.name, what


async def test_exclude_resource_contents_keeps_statuses_and_drops_bodies(env: Env) -> None:
    client = env.xds.connect(delta=False)
    await subscribe_all(env, client)
    config = await env.only(exclude_resource_contents=True)
    assert len(config.generic_xds_configs) == len(BASE_CLUSTERS) + 2 + len(BASE_LISTENERS) + 2
    for entry in config.generic_xds_configs:
        assert entry.client_status == ACKED
        assert entry.config_status == SYNCED
        assert entry.version_info
        assert not entry.HasField("xds_config")


# -- NACKed: ERROR with the message ---------------------------------------------------------


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_nacked_type_shows_nacked_with_the_message(env: Env, delta: bool) -> None:
    client = env.xds.connect(delta=delta)
    clusters = await client.fetch(CDS)
    await env.xds.wait_acked(clusters)
    if delta:
        client.delta_request(LDS)
    else:
        client.request(LDS, [])
    listeners = await client.recv(LDS)
    message = "Error adding/updating listener(s) 0.0.0.0_9080: unknown filter"
    client.nack(listeners, message)
    await env.xds.wait_until(lambda: env.xds.state(LDS).nack is not None, "the NACK recorded")
    rejected = listeners.system_version_info if delta else listeners.version_info

    config = await env.only()
    entries = by_key(config)
    assert names_of(config, LDS) == sorted(resource_names(listeners))
    for name in names_of(config, LDS):
        entry = entries[(LDS, name)]
        assert entry.client_status == NACKED
        assert entry.config_status == ERROR
        assert entry.error_state.details == message
        assert entry.error_state.version_info == rejected
        assert entry.error_state.last_update_attempt.seconds > 0
        # The client does not have it: the rejected body is the failed configuration.
        assert not entry.HasField("xds_config")
        assert decode(LDS, entry.error_state.failed_configuration.value).name == name
    for name in BASE_CLUSTERS:
        entry = entries[(CDS, name)]
        assert (entry.client_status, entry.config_status) == (ACKED, SYNCED)
        assert not entry.HasField("error_state")


async def test_an_ack_after_a_nack_clears_the_error(env: Env) -> None:
    client = env.xds.connect(delta=False)
    client.request(CDS, [])
    first = await client.recv(CDS)
    client.nack(first, "bad cluster")
    await env.xds.wait_until(lambda: env.xds.state(CDS).nack is not None, "the NACK recorded")
    assert {e.client_status for e in (await env.only()).generic_xds_configs} == {NACKED}

    # The config changes; the new response is in flight, then ACKed.
    env.xds.update(mesh(ratings=True))
    second = await client.recv(CDS)
    config = await env.only()
    assert {(e.client_status, e.config_status) for e in config.generic_xds_configs} == {
        (REQUESTED, STALE)
    }
    client.ack(second)
    await env.xds.wait_acked(second)
    config = await env.only()
    assert RATINGS in names_of(config, CDS)
    assert {(e.client_status, e.config_status) for e in config.generic_xds_configs} == {
        (ACKED, SYNCED)
    }


# -- in flight, changed, missing -------------------------------------------------------------


async def test_sent_but_not_yet_acked_is_requested_and_stale(env: Env) -> None:
    client = env.xds.connect(delta=False)
    client.request(CDS, [])
    await client.recv(CDS)
    config = await env.only()
    assert names_of(config, CDS) == BASE_CLUSTERS
    for entry in config.generic_xds_configs:
        assert (entry.client_status, entry.config_status) == (REQUESTED, STALE)
        assert entry.HasField("xds_config")  # what is on its way


async def test_config_changed_and_not_pushed_yet_is_stale(env: Env) -> None:
    client = env.xds.connect(delta=True)
    await subscribe_all(env, client)
    # A new snapshot the connection has not been pushed yet (the debounce/queue window).
    env.xds.ads.context = objects.context(*mesh(reviews_endpoints=("10.1.0.9",)))
    entries = by_key(await env.only())
    reviews = entries[(EDS, REVIEWS)]
    assert (reviews.client_status, reviews.config_status) == (ACKED, STALE)
    assert not reviews.HasField("xds_config")  # istiolite no longer has what the client has
    details = entries[(EDS, DETAILS)]
    assert (details.client_status, details.config_status) == (ACKED, SYNCED)
    assert all(e.config_status == SYNCED for k, e in entries.items() if k[0] != EDS)

    # The push goes out and is ACKed: SYNCED again, with the new endpoints.
    env.xds.ads.update(env.xds.ads.context)
    pushed = await client.drain()
    for response in pushed:
        await env.xds.wait_acked(response)
    entries = by_key(await env.only())
    reviews = entries[(EDS, REVIEWS)]
    assert (reviews.client_status, reviews.config_status) == (ACKED, SYNCED)
    cla = decode(EDS, reviews.xds_config.value)
    assert [
        e.endpoint.address.socket_address.address for lb in cla.endpoints for e in lb.lb_endpoints
    ] == ["10.1.0.9"]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_subscribed_name_that_does_not_exist(env: Env, delta: bool) -> None:
    client = env.xds.connect(delta=delta)
    response = await client.fetch(EDS, [REVIEWS, RATINGS])
    await env.xds.wait_acked(response)
    entries = by_key(await env.only())
    missing = entries[(EDS, RATINGS)]
    assert (missing.client_status, missing.config_status) == (DOES_NOT_EXIST, NOT_SENT)
    assert not missing.version_info
    assert not missing.HasField("xds_config")
    assert entries[(EDS, REVIEWS)].client_status == ACKED


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("nack", [False, True], ids=["acked", "nacked"])
async def test_secrets_never_carry_their_body(env: Env, nack: bool) -> None:
    client = env.xds.connect(delta=False)
    client.request(SDS, ["default"])
    response = await client.recv(SDS)
    assert PRIVATE_KEY.encode() in response.SerializeToString()  # the test secret is real
    if nack:
        client.nack(response, "bad secret")
        await env.xds.wait_until(lambda: env.xds.state(SDS).nack is not None, "the NACK")
    else:
        client.ack(response)
        await env.xds.wait_acked(response)

    reply = await env.fetch()
    entry = by_key(reply.config[0])[(SDS, "default")]
    assert entry.client_status == (NACKED if nack else ACKED)
    assert entry.version_info
    assert not entry.HasField("xds_config")
    assert not entry.error_state.HasField("failed_configuration")
    assert b"not-really-a-key" not in reply.SerializeToString()


# -- which proxies ---------------------------------------------------------------------------


async def two_proxies(env: Env) -> None:
    first = env.xds.connect(delta=False)
    second = env.xds.connect(delta=True, node=make_node(OTHER_ID, namespace="other"))
    for client in (first, second):
        await client.fetch(CDS)
    await env.xds.wait_for_connections(2)
    await env.xds.wait_until(
        lambda: all(
            CDS in c.stream.types and c.stream.types[CDS].acked_at is not None
            for c in env.xds.ads.connections.values()
        ),
        "both ACKed CDS",
    )


def metadata_matcher(key: str, value: str) -> node_pb2.NodeMatcher:
    return node_pb2.NodeMatcher(
        node_metadatas=[{"path": [{"key": key}], "value": {"string_match": {"exact": value}}}]
    )


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        ([], [NODE_ID, OTHER_ID]),
        ([node_id_exact(NODE_ID)], [NODE_ID]),
        ([node_pb2.NodeMatcher(node_id={"prefix": "sidecar~10.0.0.2~"})], [OTHER_ID]),
        ([node_pb2.NodeMatcher(node_id={"suffix": ".other.svc.cluster.local"})], []),
        ([node_pb2.NodeMatcher(node_id={"suffix": "~other.svc.cluster.local"})], [OTHER_ID]),
        ([node_pb2.NodeMatcher(node_id={"safe_regex": {"regex": r"sidecar~10\.0\.0\.\d~.*"}})],
         [NODE_ID, OTHER_ID]),
        ([node_pb2.NodeMatcher(node_id={"exact": NODE_ID.upper(), "ignore_case": True})],
         [NODE_ID]),
        ([node_id_exact(NODE_ID), node_id_exact(OTHER_ID)], [NODE_ID, OTHER_ID]),  # OR
        ([metadata_matcher("NAMESPACE", "other")], [OTHER_ID]),
        ([node_pb2.NodeMatcher(
            node_id={"exact": NODE_ID},
            node_metadatas=[{"path": [{"key": "NAMESPACE"}],
                             "value": {"string_match": {"exact": "other"}}}],
        )], []),  # AND within one matcher
        ([node_pb2.NodeMatcher(
            node_metadatas=[{"path": [{"key": "LABELS"}, {"key": "app"}],
                             "value": {"string_match": {"exact": "app-1"}}}],
        )], [NODE_ID, OTHER_ID]),
        ([node_pb2.NodeMatcher(
            node_metadatas=[{"path": [{"key": "INTERCEPTION_MODE"}],
                             "value": {"present_match": True}}],
        )], [NODE_ID, OTHER_ID]),
        ([node_id_exact("sidecar~10.9.9.9~nobody.x~x.svc.cluster.local")], []),
    ],
    ids=[
        "none", "exact", "prefix", "suffix-miss", "suffix", "regex", "ignore-case", "or",
        "metadata", "and", "nested-metadata", "present-metadata", "no-match",
    ],
)  # fmt: skip
async def test_node_matchers_select_proxies(
    env: Env, matchers: list[node_pb2.NodeMatcher], expected: list[str]
) -> None:
    await two_proxies(env)
    response = await env.fetch(*matchers)
    assert [c.node.id for c in response.config] == expected
    for config in response.config:
        assert names_of(config, CDS), config.node.id


async def test_bad_matcher_is_invalid_argument(env: Env) -> None:
    await two_proxies(env)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.fetch(node_pb2.NodeMatcher(node_id={"safe_regex": {"regex": "("}}))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stream_client_status_answers_each_request(env: Env) -> None:
    await two_proxies(env)
    call = env.csds.StreamClientStatus(timeout=10)
    await call.write(csds_pb2.ClientStatusRequest(node_matchers=[node_id_exact(OTHER_ID)]))
    first = await call.read()
    assert [c.node.id for c in first.config] == [OTHER_ID]
    await call.write(csds_pb2.ClientStatusRequest())
    second = await call.read()
    assert [c.node.id for c in second.config] == [NODE_ID, OTHER_ID]
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF


async def test_disconnected_proxy_disappears(env: Env) -> None:
    await two_proxies(env)
    assert len((await env.fetch()).config) == 2
    await env.xds.clients[0].aclose()
    await env.xds.wait_for_connections(1)
    assert [c.node.id for c in (await env.fetch()).config] == [OTHER_ID]


async def test_stream_without_a_node_yet_is_not_listed(env: Env) -> None:
    env.xds.connect(delta=False, send_node=False)  # a stream that has said nothing
    await env.xds.wait_for_connections(1)
    assert len((await env.fetch()).config) == 0


# -- a real Envoy ----------------------------------------------------------------------------

ENVOY_NAMESPACE = "shop"
ENVOY_NODE = f"sidecar~127.0.0.1~client-1.{ENVOY_NAMESPACE}~{ENVOY_NAMESPACE}.svc.cluster.local"


def _dynamic(dump: dict[str, Any], section: str) -> list[dict[str, Any]]:
    for config in dump["configs"]:
        if section in config:
            return list(config[section])
    return []


@pytest.fixture(params=["sotw", "delta"])
def real_envoy(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[IstioliteProcess, EnvoyProcess]]:
    config = tmp_path / "config"
    config.mkdir()
    mesh_files.write(
        config / "web.yaml",
        mesh_files.service("web", ENVOY_NAMESPACE, 18080),
        mesh_files.endpoint_slice("web", ENVOY_NAMESPACE, 18080, ["127.0.0.9", "127.0.0.10"]),
    )
    istiolite: IstioliteProcess | None = None
    envoy: EnvoyProcess | None = None
    try:
        istiolite = IstioliteProcess([config], tmp_path)
        envoy = EnvoyProcess(
            tmp_path,
            istiolite.xds_address,
            ENVOY_NODE,
            delta=request.param == "delta",
            meta={"NAMESPACE": ENVOY_NAMESPACE, "INTERCEPTION_MODE": "NONE"},
            labels={"app": "client"},
        )
        wait_for(envoy.synced, what="envoy synced")
        yield istiolite, envoy
    finally:
        stop_all(envoy, istiolite)


@pytest.mark.envoy
@pytest.mark.slow
def test_real_envoy_that_accepted_everything_is_synced(
    real_envoy: tuple[IstioliteProcess, EnvoyProcess],
) -> None:
    istiolite, envoy = real_envoy
    request = csds_pb2.ClientStatusRequest(node_matchers=[node_id_exact(ENVOY_NODE)])
    with grpc.insecure_channel(istiolite.xds_address) as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)

        def all_acked() -> csds_pb2.ClientConfig | None:
            response = stub.FetchClientStatus(request, timeout=5)
            if len(response.config) != 1:
                return None
            entries = response.config[0].generic_xds_configs
            if entries and all(e.client_status == ACKED for e in entries):
                return response.config[0]
            return None

        config = wait_for(all_acked, what="every resource ACKed in CSDS")

    assert config.node.id == ENVOY_NODE
    assert config.node.metadata.fields["NAMESPACE"].string_value == ENVOY_NAMESPACE
    for entry in config.generic_xds_configs:
        assert entry.config_status == SYNCED, (entry.type_url, entry.name)
        assert not entry.HasField("error_state")
        assert entry.HasField("xds_config")
    # What CSDS says the proxy has is what Envoy's own /config_dump shows.
    dump = envoy.config_dump()
    clusters = {c["cluster"]["name"] for c in _dynamic(dump, "dynamic_active_clusters")}
    listeners = {item["name"] for item in _dynamic(dump, "dynamic_listeners")}
    routes = {r["route_config"]["name"] for r in _dynamic(dump, "dynamic_route_configs")}
    assert set(names_of(config, CDS)) == clusters
    assert set(names_of(config, LDS)) == listeners
    assert set(names_of(config, RDS)) == routes
    # Envoy dumps endpoints of every cluster; those of EDS clusters came over EDS.
    eds_clusters = {
        c["cluster"]["name"]
        for c in _dynamic(dump, "dynamic_active_clusters")
        if "eds_cluster_config" in c["cluster"]
    }
    endpoint_clusters = {
        e["endpoint_config"]["cluster_name"] for e in _dynamic(dump, "dynamic_endpoint_configs")
    }
    assert eds_clusters
    assert set(names_of(config, EDS)) == eds_clusters
    assert eds_clusters <= endpoint_clusters
    assert "error_state" not in str(dump)
    status, _ = http_get(envoy.admin("/ready"))
    assert status == 200


async def test_redos_regex_answers_fast_and_the_loop_keeps_running(env: Env) -> None:
    # `(.|.)*X` backtracks 2^n steps in Python `re` on a 50-character node id that has no X;
    # RE2 answers in linear time. Server and client share this event loop, so a match run on the
    # loop by a backtracking engine would stall the ticker and the cheap requests beside it.
    await two_proxies(env)
    gaps: list[float] = []
    last_tick = time.monotonic()

    async def ticker() -> None:
        nonlocal last_tick
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last_tick)
            last_tick = now

    async def timed(request: Any) -> tuple[float, Any]:
        started = time.monotonic()
        result = await request
        return time.monotonic() - started, result

    hostile = node_pb2.NodeMatcher(node_id={"safe_regex": {"regex": "(.|.)*X"}})
    task = asyncio.create_task(ticker())
    try:
        # The hostile request and, at the same time, cheap ones another client would make.
        (hostile_time, hostile_response), *cheap = await asyncio.gather(
            timed(env.fetch(hostile)),
            *(timed(env.fetch(node_id_exact(NODE_ID))) for _ in range(5)),
        )
    finally:
        task.cancel()
        gaps.append(time.monotonic() - last_tick)  # up to the end, even with no tick at all
    assert list(hostile_response.config) == []
    assert hostile_time < 1.0, hostile_time
    for cheap_time, response in cheap:
        assert [c.node.id for c in response.config] == [NODE_ID]
        assert cheap_time < 0.5, cheap_time
    # The loop kept turning: no tick was held up for anything like the hostile match's time.
    assert max(gaps) < 0.5, max(gaps)


async def test_lookahead_is_invalid_argument_naming_re2(env: Env) -> None:
    await two_proxies(env)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.fetch(node_pb2.NodeMatcher(node_id={"safe_regex": {"regex": "(?=a)a"}}))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "safe_regex" in (caught.value.details() or "") and "RE2" in (
        caught.value.details() or ""
    )


async def test_too_many_node_matchers_is_invalid_argument(env: Env) -> None:
    await two_proxies(env)
    many = [node_pb2.NodeMatcher(node_id={"exact": str(i)}) for i in range(65)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.fetch(*many)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node_matchers" in (caught.value.details() or "")
