"""What a config change sends, and to whom: the real server (file source, debounce, push engine)
with several in-process clients subscribed to different clusters."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.service.discovery.v3 import ads_pb2_grpc

from istiolite import metrics, type_urls
from istiolite.server import Istiolite
from istiolite.settings import Settings
from tests.protocol.harness import XdsClient, make_node, resources, types_of
from tests.support import objects

REVIEWS = objects.outbound_cluster("reviews", 9080)
DETAILS = objects.outbound_cluster("details", 9081)


def _write(path: Path, *raws: objects.Raw) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump_all(list(raws)))
    tmp.rename(path)


def _reviews_slice(*addresses: str) -> objects.Raw:
    return objects.endpoint_slice("reviews", endpoints=addresses, ports=[("http", 9080)])


@dataclass
class Running:
    app: Istiolite
    config: Path
    stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub
    clients: list[XdsClient]

    def connect(self, delta: bool, pod: str) -> XdsClient:
        node = make_node(f"sidecar~10.9.0.1~{pod}.default~default.svc.cluster.local")
        client = XdsClient(self.stub, delta=delta, node=node)
        self.clients.append(client)
        return client

    async def pushed(self) -> dict[str, object]:
        """Wait for the next push after a file edit, and return its status."""
        before = self.app.push_status.get("version")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while self.app.push_status.get("version") == before:
            assert loop.time() < deadline, "no push within 10 s of the edit"
            await asyncio.sleep(0.01)
        return self.app.push_status


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    config = tmp_path / "config"
    config.mkdir()
    _write(
        config / "reviews.yaml",
        objects.service("reviews", ports=[objects.service_port("http", 9080)]),
        _reviews_slice("10.1.0.1", "10.1.0.2"),
    )
    _write(
        config / "details.yaml",
        objects.service("details", ports=[objects.service_port("http", 9081)]),
        objects.endpoint_slice("details", endpoints=["10.2.0.1"], ports=[("http", 9081)]),
    )
    settings = Settings(
        config_dirs=[config],
        grpc_addr="127.0.0.1:0",
        http_addr="127.0.0.1:0",
        monitoring_addr="127.0.0.1:0",
        debounce_quiet=0.02,
    )
    app = Istiolite(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not app.grpc_port or not app.files.watching:
        assert not task.done(), task
        assert loop.time() < deadline, "istiolite did not start"
        await asyncio.sleep(0.01)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    state = Running(app, config, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel), [])
    try:
        yield state
    finally:
        for client in state.clients:
            await client.aclose()
        await channel.close()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


async def _subscribe_eds(client: XdsClient, cluster: str) -> None:
    """CDS (wildcard) then EDS for one cluster, everything ACKed, as a scoped proxy would."""
    await client.fetch(type_urls.CLUSTER)
    await client.fetch(type_urls.ENDPOINT, [cluster])
    await client.collect()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_endpoint_change_sends_only_eds_only_to_subscribers(
    running: Running, delta: bool
) -> None:
    reviews_watcher = running.connect(delta, "a-1")
    details_watcher = running.connect(not delta, "b-1")  # the other protocol variant too
    listeners_only = running.connect(delta, "c-1")
    await _subscribe_eds(reviews_watcher, REVIEWS)
    await _subscribe_eds(details_watcher, DETAILS)
    await listeners_only.fetch(type_urls.LISTENER)
    await listeners_only.collect()
    eds_before = metrics.PUSHES.value("eds")
    cds_before = metrics.PUSHES.value("cds")

    _write(
        running.config / "reviews.yaml",
        objects.service("reviews", ports=[objects.service_port("http", 9080)]),
        _reviews_slice("10.1.0.1"),
    )
    status = await running.pushed()
    assert status["full"] is False
    assert status["eds_clusters"] == [REVIEWS]

    got = await reviews_watcher.drain()
    assert types_of(got) == ["EDS"]
    assert set(resources(got[-1])) == {REVIEWS}
    await details_watcher.expect_silence()
    await listeners_only.expect_silence()
    assert metrics.PUSHES.value("cds") == cds_before
    assert metrics.PUSHES.value("eds") > eds_before


async def test_service_change_is_a_full_push_to_everyone(running: Running) -> None:
    client = running.connect(True, "a-1")
    other = running.connect(False, "b-1")
    for c in (client, other):
        await c.fetch(type_urls.CLUSTER)
        await c.fetch(type_urls.LISTENER)
        await c.collect()

    _write(
        running.config / "ratings.yaml",
        objects.service("ratings", ports=[objects.service_port("http", 9082)]),
    )
    status = await running.pushed()
    assert status["full"] is True
    for c in (client, other):
        got = await c.drain()
        assert types_of(got)[:2] == ["CDS", "LDS"], types_of(got)
        assert objects.outbound_cluster("ratings", 9082) in resources(got[0])


async def test_headless_endpoint_change_is_a_full_push(running: Running) -> None:
    headless = objects.service("db", ports=[objects.service_port("tcp", 5432)])
    headless["spec"]["clusterIP"] = "None"
    _write(
        running.config / "db.yaml",
        headless,
        objects.endpoint_slice("db", endpoints=["10.5.0.1"], ports=[("tcp", 5432)]),
    )
    await running.pushed()
    client = running.connect(True, "a-1")
    await client.fetch(type_urls.LISTENER)
    await client.collect()

    # Headless endpoints become listeners (one per pod IP), so a slice change cannot be EDS-only.
    _write(
        running.config / "db.yaml",
        headless,
        objects.endpoint_slice("db", endpoints=["10.5.0.1", "10.5.0.2"], ports=[("tcp", 5432)]),
    )
    status = await running.pushed()
    assert status["full"] is True
    got = await client.drain()
    assert "10.5.0.2_5432" in resources(got[0])


def _fetch_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def _metrics(app: Istiolite) -> dict[str, float]:
    """The monitoring port's /metrics, parsed into {'name{labels}': value}. Fetched from a
    thread: the server runs on this test's event loop."""
    text = await asyncio.to_thread(_fetch_metrics, app.monitoring_port)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_metrics_count_connections_pushes_rejects_and_convergence(running: Running) -> None:
    before = await _metrics(running.app)
    client = running.connect(True, "a-1")
    client.delta_request(type_urls.CLUSTER)
    clusters = await client.recv(type_urls.CLUSTER)
    client.nack(clusters, "cluster rejected: bad thing")
    await client.collect(ack=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (await _metrics(running.app)).get('pilot_total_xds_rejects{type="cds"}', 0) <= before.get(
        'pilot_total_xds_rejects{type="cds"}', 0
    ):
        assert loop.time() < deadline, "the NACK never reached pilot_total_xds_rejects"
        await asyncio.sleep(0.02)
    after = await _metrics(running.app)
    assert after['pilot_xds{version="unknown"}'] >= 1
    assert after['pilot_xds_pushes{type="cds"}'] > before.get('pilot_xds_pushes{type="cds"}', 0)
    assert after['pilot_xds_config_size_bytes_count{type="cds"}'] >= 1

    _write(
        running.config / "reviews.yaml",
        objects.service("reviews", ports=[objects.service_port("http", 9080)]),
        _reviews_slice("10.1.0.9"),
    )
    await running.pushed()
    # The NACKed content is not re-sent; the endpoint-only push to this CDS-only proxy sends
    # nothing, so convergence is measured on a proxy that watches the endpoints.
    watcher = running.connect(False, "b-1")
    await _subscribe_eds(watcher, REVIEWS)
    _write(
        running.config / "reviews.yaml",
        objects.service("reviews", ports=[objects.service_port("http", 9080)]),
        _reviews_slice("10.1.0.10"),
    )
    await running.pushed()
    await watcher.drain()
    final = await _metrics(running.app)
    assert final["pilot_proxy_convergence_time_count"] > before.get(
        "pilot_proxy_convergence_time_count", 0
    )
    assert final['pilot_push_triggers{type="EndpointSlice"}'] >= 2
    assert final["pilot_debounce_time_count"] >= 2
    await client.expect_silence()


async def test_sidecar_scoped_proxy_gets_no_push_for_changes_elsewhere(running: Running) -> None:
    _write(
        running.config / "sidecar.yaml",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": "default"},
            "spec": {"egress": [{"hosts": ["./*"]}]},
        },
    )
    await running.pushed()
    scoped = running.connect(True, "a-1")
    clusters = await scoped.fetch(type_urls.CLUSTER)
    await scoped.fetch(type_urls.LISTENER)
    await scoped.collect()
    assert REVIEWS in resources(clusters)

    # A service in another namespace: a full push for the mesh, nothing for this proxy.
    other = objects.service("billing", ports=[objects.service_port("http", 9090)])
    other["metadata"]["namespace"] = "team-b"
    _write(running.config / "billing.yaml", other)
    status = await running.pushed()
    assert status["full"] is True
    await scoped.expect_silence()

    # One in its own namespace reaches it.
    _write(
        running.config / "ratings.yaml",
        objects.service("ratings", ports=[objects.service_port("http", 9082)]),
    )
    await running.pushed()
    got = await scoped.drain()
    assert objects.outbound_cluster("ratings", 9082) in resources(got[0])
    assert not any("billing" in name for name in resources(got[0]))


async def test_missing_subset_is_a_warning_not_a_broken_proxy(running: Running) -> None:
    routes = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "v9"}}]}],
        },
    }
    client = running.connect(True, "a-1")
    await client.fetch(type_urls.ROUTE, ["9080"])
    await client.collect()
    _write(running.config / "routes.yaml", routes)
    await running.pushed()
    [warning] = running.app.warnings
    assert warning.object == "VirtualService default/reviews"
    assert warning.field == "spec.http[0].route[0].destination.subset"
    assert "'v9'" in warning.message
    # The proxy still gets its routes (the VirtualService applies; the subset answers 503).
    got = await client.drain()
    assert "9080" in resources(got[0])
