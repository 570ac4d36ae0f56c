"""Values that pass validation yet make translation raise (issue 9, finding 3) must not take a
proxy down: the object is left out of that push, named (log, /debug/configz, metric), and the
proxy's stream stays open and keeps getting everything else, endpoint changes included.

The bad values are the issue's own, which reach generation as any value that slips past
validation would (where validation rejects them, that test is skipped: the injected-failure
tests here and in tests/unit/networking/test_generation_errors.py keep the guards covered)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryResponse, DiscoveryRequest
from structlog.testing import capture_logs

from istiolite import metrics, type_urls
from istiolite.model.validation import ValidationError
from istiolite.networking import generator
from istiolite.networking.retry import default_retry_policy
from istiolite.xds.protocol import SotwStream
from tests.protocol import test_push_pipeline as pipeline
from tests.protocol.harness import XdsClient, make_node, resources
from tests.support import objects

# The same live wiring (store → Pusher → ResourceCache → ADS) over real gRPC on 127.0.0.1.
mesh = pipeline.mesh
Mesh = pipeline.Mesh

CDS, EDS, RDS = type_urls.CLUSTER, type_urls.ENDPOINT, type_urls.ROUTE
NODE = f"sidecar~10.9.0.1~client-0.default~default.svc.{objects.DOMAIN}"
NODE_2 = f"sidecar~10.9.0.2~client-1.default~default.svc.{objects.DOMAIN}"
PORTS = {"reviews": 9080, "details": 9081, "ratings": 9082}


def _cluster(name: str) -> str:
    return objects.outbound_cluster(name, PORTS[name])


def _services() -> list[objects.Raw]:
    return [
        objects.service(name, ports=[objects.service_port("http", port)])
        for name, port in PORTS.items()
    ]


def _endpoints(ratings: str) -> list[objects.Raw]:
    return [
        objects.endpoint_slice(name, endpoints=[address], ports=[("http", PORTS[name])])
        for name, address in (("reviews", "10.1.0.1"), ("details", "10.2.0.1"))
    ] + [objects.endpoint_slice("ratings", endpoints=[ratings], ports=[("http", 9082)])]


def _destination_rule(connect_timeout: str) -> objects.Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews-pool", "namespace": "default"},
        "spec": {
            "host": "reviews",
            "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": connect_timeout}}},
        },
    }


def _virtual_service(name: str, host: str, http: dict[str, Any]) -> objects.Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}], **http}]},
    }


BAD_DR = _destination_rule("100000000000000000000h")
BAD_VS = _virtual_service("details-retries", "details", {"retries": {"attempts": 4294967296}})
GOOD_VS = _virtual_service("ratings-timeout", "ratings", {"timeout": "7s"})


def _route(response: Any, route_name: str) -> Any:
    return resources(response)[route_name]


def _state(client: XdsClient, type_url: str) -> dict[str, Any]:
    """What the client holds of `type_url` after every response it received."""
    held: dict[str, Any] = {}
    for response in client.received:
        if response.type_url != type_url:
            continue
        if isinstance(response, DeltaDiscoveryResponse):
            for name in response.removed_resources:
                held.pop(name, None)
        elif type_url in type_urls.FULL_STATE_TYPES:
            held.clear()
        held.update(resources(response))
    return held


async def _assert_served_without_the_bad_objects(client: XdsClient) -> None:
    clusters = set(_state(client, CDS))
    # The DestinationRule's cluster is left out whole (not sent without its policy); the rest is
    # there.
    assert _cluster("reviews") not in clusters
    assert {_cluster("details"), _cluster("ratings")} <= clusters
    got = _state(client, RDS)
    # The failing VirtualService is left out: details gets the default route (no retries of
    # 4294967296); the good one next to it is applied.
    (details,) = [h for h in got["9081"].virtual_hosts if h.name.startswith("details.")]
    assert details.routes[0].route.cluster == _cluster("details")
    assert details.routes[0].route.retry_policy == default_retry_policy()
    (ratings,) = [h for h in got["9082"].virtual_hosts if h.name.startswith("ratings.")]
    assert ratings.routes[0].route.timeout.seconds == 7


async def test_objects_that_fail_to_translate_are_left_out_and_named(mesh: Mesh) -> None:
    mesh.change("services", _services())
    mesh.change("endpoints", _endpoints("10.3.0.1"))
    sotw = await mesh.connect(NODE)
    delta = await mesh.connect(NODE_2)
    before = metrics.GENERATION_ERRORS.value("DestinationRule")
    with capture_logs() as logs:
        try:
            mesh.change("rules", [BAD_DR, BAD_VS, GOOD_VS])
        except ValidationError as err:
            # The first line of defence caught them, naming the field; the injected-failure
            # tests cover the second.
            assert "spec." in str(err), err
            return
        for client in (sotw, delta):
            await client.collect()
    for client in (sotw, delta):
        await _assert_served_without_the_bad_objects(client)

    # Named, with what was left out, in the cache's current errors (what /debug/configz lists)…
    errors = {e.object: e for e in mesh.cache.errors()}
    assert set(errors) == {
        "DestinationRule default/reviews-pool",
        "VirtualService default/details-retries",
    }
    assert "out of range" in errors["DestinationRule default/reviews-pool"].message
    assert (
        errors["DestinationRule default/reviews-pool"].dropped == f"cluster {_cluster('reviews')}"
    )
    # …logged once per object although two proxies used the results…
    left_out = [
        e["object"] for e in logs if e["event"] == "config object left out of generated config"
    ]
    assert sorted(left_out) == sorted(errors)
    # …and counted.
    assert metrics.GENERATION_ERRORS.value("DestinationRule") == before + 1

    # The streams stayed open: an endpoint change still reaches both proxies.
    mesh.change("endpoints", _endpoints("10.3.0.9"))
    for client in (sotw, delta):
        got = await client.recv(EDS)
        client.ack(got)
        (assignment,) = [a for n, a in resources(got).items() if n == _cluster("ratings")]
        addresses = [
            e.endpoint.address.socket_address.address
            for group in assignment.endpoints
            for e in group.lb_endpoints
        ]
        assert addresses == ["10.3.0.9"]

    # An unrelated change keeps the cached results that left the objects out: still reported.
    mesh.change("other", [objects.service("other", ports=[objects.service_port("http", 80)])])
    for client in (sotw, delta):
        await client.collect()
    assert {e.object for e in mesh.cache.errors()} == set(errors)

    # Fixing the DestinationRule brings its cluster back and clears its error.
    mesh.change("rules", [_destination_rule("3s"), BAD_VS, GOOD_VS])
    for client in (sotw, delta):
        await client.collect()
        assert _cluster("reviews") in _state(client, CDS)
    assert {e.object for e in mesh.cache.errors()} == {"VirtualService default/details-retries"}


async def test_a_whole_type_that_fails_keeps_the_previous_resources_and_the_stream(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every per-object translation is guarded, so no input that reaches generation makes a whole
    # type raise any more; that takes a bug, which only an injected failure can stand for.
    mesh.change("services", _services())
    mesh.change("endpoints", _endpoints("10.3.0.1"))
    sotw = await mesh.connect(NODE)
    delta = await mesh.connect(NODE_2)
    clusters_before = {c: set(_state(c, CDS)) for c in (sotw, delta)}

    def broken(ctx: Any, proxy: Any) -> Any:
        raise RuntimeError("injected generator bug")

    monkeypatch.setitem(generator._GENERATORS, CDS, broken)
    failures = metrics.GENERATION_FAILURES.value("CDS")
    with capture_logs() as logs:
        mesh.change("rules", [GOOD_VS])  # a full push: CDS is regenerated, and fails
        for client in (sotw, delta):
            got = await client.collect()
            # Nothing replaces the clusters the proxy has; routes still arrive.
            assert CDS not in {r.type_url for r in got}
            assert RDS in {r.type_url for r in got}
        mesh.change("endpoints", _endpoints("10.3.0.9"))  # and endpoint changes still flow
        for client in (sotw, delta):
            got = await client.recv(EDS)
            client.ack(got)
            assert _cluster("ratings") in resources(got)
    failed = [e for e in logs if e["event"].startswith("generation failed")]
    assert [(e["proxy"], e["type"]) for e in failed] == [(NODE, "CDS"), (NODE_2, "CDS")]
    assert metrics.GENERATION_FAILURES.value("CDS") == failures + 2

    # Once generation works again, the proxy is served as before.
    monkeypatch.undo()
    mesh.change(
        "services",
        [*_services(), objects.service("extra", ports=[objects.service_port("http", 80)])],
    )
    for client in (sotw, delta):
        await client.collect()
    assert objects.outbound_cluster("extra", 80) in _state(sotw, CDS)
    assert clusters_before[sotw] < set(_state(sotw, CDS))


def test_a_stream_with_nothing_sent_yet_sends_nothing_when_generation_fails() -> None:
    # Injected for the same reason as above. An empty SotW CDS would make a reconnecting Envoy
    # drop every cluster it still has: a first answer that cannot be generated is not sent.
    def broken(ctx: Any, proxy: Any, type_url: str) -> Any:
        raise RuntimeError("injected generator bug")

    stream: SotwStream = SotwStream(broken)
    out = stream.on_request(DiscoveryRequest(node=make_node(NODE), type_url=CDS), None)
    assert out == []
    assert stream.types[CDS].nonce_sent == ""
