"""State-of-the-world ADS conversations with the real server: the rules of DESIGN §4.

Every response read through the client is also checked for duplicate names.
"""

from __future__ import annotations

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2

from tests.protocol.harness import (
    BASE_CLUSTERS,
    BASE_LISTENERS,
    CDS,
    DETAILS,
    EDS,
    LDS,
    NAME_TABLE,
    PROXY_CONFIG,
    RATINGS,
    RATINGS_9082,
    RDS,
    REVIEWS,
    XdsClient,
    XdsHarness,
    make_node,
    mesh,
    resource_names,
    resources,
    types_of,
)

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


async def subscribe_all(client: XdsClient) -> None:
    """What Envoy does at start: CDS, then EDS for the clusters, LDS, then RDS for the routes.

    EDS and RDS also ask for ratings' names, which do not exist yet (remembered by the server).
    """
    await client.fetch(CDS)
    await client.fetch(EDS, [REVIEWS, DETAILS, RATINGS, RATINGS_9082])
    await client.fetch(LDS)
    await client.fetch(RDS, ["9080", "9081", "9082"])


# -- ACK ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_url", "names", "expected"),
    [
        (CDS, [], BASE_CLUSTERS),
        (EDS, [REVIEWS, DETAILS], sorted([REVIEWS, DETAILS])),
        (LDS, [], BASE_LISTENERS),
        (RDS, ["9080", "9081"], ["9080", "9081"]),
    ],
    ids=["CDS", "EDS", "LDS", "RDS"],
)
async def test_ack_is_recorded_and_answered_with_silence(
    xds: XdsHarness, sotw: XdsClient, type_url: str, names: list[str], expected: list[str]
) -> None:
    sotw.request(type_url, names)
    response = await sotw.recv(type_url)
    assert response.nonce
    assert response.version_info
    assert sorted(resource_names(response)) == expected

    sotw.ack(response)
    await xds.wait_acked(response)
    await sotw.expect_silence()

    state = xds.state(type_url)
    assert state.nonce_sent == response.nonce
    assert state.version_acked == response.version_info
    assert state.nack is None


async def test_initial_response_decodes_as_envoy_config(sotw: XdsClient) -> None:
    response = await sotw.fetch(CDS)
    clusters = resources(response)
    reviews = clusters[REVIEWS]
    assert reviews.type == cluster_pb2.Cluster.EDS
    assert reviews.eds_cluster_config.service_name == REVIEWS
    assert clusters["PassthroughCluster"].type == cluster_pb2.Cluster.ORIGINAL_DST


# -- NACK -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_url", "names", "changed"),
    [
        (CDS, [], mesh(ratings=True)),
        (EDS, [REVIEWS], mesh(reviews_endpoints=["10.1.0.7"])),
        (LDS, [], mesh(ratings=True)),
    ],
    ids=["CDS", "EDS", "LDS"],
)
async def test_nack_is_recorded_and_the_same_content_not_resent(
    xds: XdsHarness, sotw: XdsClient, type_url: str, names: list[str], changed: list
) -> None:
    sotw.request(type_url, names)
    rejected = await sotw.recv(type_url)
    sotw.nack(rejected, "rejected by test")
    await xds.wait_until(lambda: xds.state(type_url).nack is not None, "the NACK")
    await sotw.expect_silence()

    state = xds.state(type_url)
    assert state.nack is not None
    assert state.nack.message == "rejected by test"
    assert state.nack.nonce == rejected.nonce
    assert state.nack.rejected_version == rejected.version_info
    assert state.version_acked == ""

    # A new push of the same config: the rejected content is not sent again.
    xds.update(mesh())
    await sotw.expect_silence()

    # New content is.
    xds.update(changed)
    fresh = await sotw.recv(type_url)
    assert fresh.version_info != rejected.version_info
    sotw.ack(fresh)
    await xds.wait_acked(fresh)
    assert xds.state(type_url).nack is None
    assert xds.state(type_url).version_acked == fresh.version_info


# -- Subscriptions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_url", "first", "added"),
    [(EDS, REVIEWS, DETAILS), (RDS, "9080", "9081")],
    ids=["EDS", "RDS"],
)
async def test_newly_subscribed_name_is_answered_at_once(
    sotw: XdsClient, type_url: str, first: str, added: str
) -> None:
    response = await sotw.fetch(type_url, [first])
    assert resource_names(response) == [first]

    # Nothing changed on the server; the new name is still answered right away. SotW EDS and
    # RDS responses may carry a subset (Envoy updates only the watches present), so the
    # unchanged first name is not repeated.
    sotw.request(type_url, [first, added], nonce=response.nonce, version=response.version_info)
    answer = await sotw.recv(type_url)
    assert resource_names(answer) == [added]


@pytest.mark.parametrize(
    ("type_url", "existing", "missing", "expected_after"),
    [
        # reviews' endpoints are unchanged, so only the new assignment travels ...
        (EDS, REVIEWS, RATINGS_9082, [RATINGS_9082]),
        # ... while route 9080 gains ratings' virtual host, so it travels with the new 9082.
        (RDS, "9080", "9082", ["9080", "9082"]),
    ],
    ids=["EDS", "RDS"],
)
async def test_name_that_does_not_exist_yet_is_sent_when_it_appears(
    xds: XdsHarness,
    sotw: XdsClient,
    type_url: str,
    existing: str,
    missing: str,
    expected_after: list[str],
) -> None:
    response = await sotw.fetch(type_url, [existing, missing])
    assert resource_names(response) == [existing]
    await sotw.expect_silence()

    xds.update(mesh(ratings=True))
    later = await sotw.recv(type_url)
    assert sorted(resource_names(later)) == expected_after


# -- Deletions and ordering -----------------------------------------------------------------


async def test_removed_service_is_omitted_from_the_next_full_set(
    xds: XdsHarness, sotw: XdsClient
) -> None:
    await subscribe_all(sotw)

    xds.update(mesh(details=False))
    responses = await sotw.drain()

    last_cds = [r for r in responses if r.type_url == CDS][-1]
    last_lds = [r for r in responses if r.type_url == LDS][-1]
    assert sorted(resource_names(last_cds)) == [c for c in BASE_CLUSTERS if c != DETAILS]
    assert sorted(resource_names(last_lds)) == [n for n in BASE_LISTENERS if n != "0.0.0.0_9081"]
    # Make before break: the listener using the cluster goes before the cluster does.
    assert responses.index(last_lds) < responses.index(last_cds), types_of(responses)
    await sotw.expect_silence()


async def test_push_order_is_cds_eds_lds_rds(xds: XdsHarness, sotw: XdsClient) -> None:
    await subscribe_all(sotw)

    xds.update(mesh(ratings=True))
    responses = await sotw.drain()

    assert types_of(responses) == ["CDS", "EDS", "LDS", "RDS"]
    cds, eds, lds, rds = responses
    assert {RATINGS, RATINGS_9082} <= set(resource_names(cds))
    assert {RATINGS, RATINGS_9082} <= set(resource_names(eds))
    assert "0.0.0.0_9082" in resource_names(lds)
    routes = resources(rds)
    # Only the route configurations that changed: 9081 (details) is untouched.
    assert set(routes) == {"9080", "9082"}
    hosts = {vh.name for vh in routes["9080"].virtual_hosts}
    assert "ratings.default.svc.cluster.local:9080" in hosts


async def test_removals_come_after_additions(xds: XdsHarness, sotw: XdsClient) -> None:
    await subscribe_all(sotw)

    xds.update(mesh(ratings=True, details=False))
    responses = await sotw.drain()
    kinds = types_of(responses)

    cds = [r for r in responses if r.type_url == CDS]
    lds = [r for r in responses if r.type_url == LDS]
    # The new clusters arrive first, before any listener or route could point at them ...
    assert kinds[0] == "CDS"
    assert {RATINGS, RATINGS_9082} <= set(resource_names(cds[0]))
    # ... and the final state drops details only after the listeners stopped using it.
    assert DETAILS not in resource_names(cds[-1])
    assert "0.0.0.0_9081" not in resource_names(lds[-1])
    assert {RATINGS, RATINGS_9082} <= set(resource_names(cds[-1]))
    assert "0.0.0.0_9082" in resource_names(lds[-1])
    assert responses.index(cds[-1]) > max(responses.index(r) for r in lds), kinds
    assert responses.index(cds[-1]) > kinds.index("RDS"), kinds


# -- Endpoints ------------------------------------------------------------------------------


async def test_endpoints_are_resent_after_their_cluster_changes(
    xds: XdsHarness, sotw: XdsClient
) -> None:
    await subscribe_all(sotw)
    before = resources(await sotw.fetch(EDS, [REVIEWS, DETAILS]))

    # http -> http2: the cluster gains HTTP/2 options; endpoints, listeners and routes stay.
    xds.update(mesh(reviews_app_protocol="http2"))
    responses = await sotw.drain()

    assert types_of(responses) == ["CDS", "EDS"]
    cds, eds = responses
    assert HTTP_OPTIONS in resources(cds)[REVIEWS].typed_extension_protocol_options
    after = resources(eds)
    # Exactly the endpoints of the re-sent cluster, unchanged; details' cluster did not change.
    assert set(after) == {REVIEWS}
    assert after[REVIEWS] == before[REVIEWS]


async def test_service_without_endpoints_gets_an_empty_load_assignment(
    xds: XdsHarness, sotw: XdsClient
) -> None:
    response = await sotw.fetch(EDS, [REVIEWS, DETAILS])
    assignments = resources(response)
    assert assignments[DETAILS].cluster_name == DETAILS
    assert list(assignments[DETAILS].endpoints) == []
    assert sum(len(g.lb_endpoints) for g in assignments[REVIEWS].endpoints) == 2

    # Endpoints going away: an explicit empty assignment, not an omission.
    xds.update(mesh(reviews_endpoints=[]))
    emptied = await sotw.recv(EDS)
    after = resources(emptied)
    assert after[REVIEWS].cluster_name == REVIEWS
    assert list(after[REVIEWS].endpoints) == []


# -- Nonces ---------------------------------------------------------------------------------


async def test_stale_nonce_is_ignored(xds: XdsHarness, sotw: XdsClient) -> None:
    sotw.request(CDS)
    first = await sotw.recv(CDS)
    xds.update(mesh(ratings=True))
    second = await sotw.recv(CDS)

    # A rejection of the superseded response: ignored, nothing recorded, nothing sent.
    sotw.nack(first, "late rejection")
    stream = xds.connection().stream
    await xds.wait_until(lambda: stream.stale_requests == 1, "the stale request")
    await sotw.expect_silence()
    assert xds.state(CDS).nack is None

    sotw.ack(second)
    await xds.wait_acked(second)
    await sotw.expect_silence()


async def test_stale_nonce_does_not_change_subscriptions(xds: XdsHarness, sotw: XdsClient) -> None:
    first = await sotw.fetch(EDS, [REVIEWS])
    xds.update(mesh(reviews_endpoints=["10.1.0.9"]))
    second = await sotw.recv(EDS)

    # A request answering the old response, with a new name: stale, so ignored.
    stream = xds.connection().stream
    stale_before = stream.stale_requests
    sotw.request(EDS, [REVIEWS, DETAILS], nonce=first.nonce, version=first.version_info)
    await xds.wait_until(lambda: stream.stale_requests > stale_before, "the stale request")
    await sotw.expect_silence()
    assert xds.state(EDS).names == {REVIEWS}

    # The same names on the current nonce are applied, and the new name answered at once.
    sotw.request(EDS, [REVIEWS, DETAILS], nonce=second.nonce, version=second.version_info)
    answer = await sotw.recv(EDS)
    assert resource_names(answer) == [DETAILS]


# -- Istio-only types -----------------------------------------------------------------------


async def test_istio_only_types_get_an_empty_answer(xds: XdsHarness, sotw: XdsClient) -> None:
    for type_url in (NAME_TABLE, PROXY_CONFIG):
        sotw.request(type_url)
        response = await sotw.recv(type_url)
        assert response.nonce
        assert list(response.resources) == []
        sotw.ack(response)

    cds = await sotw.fetch(CDS)
    assert sorted(resource_names(cds)) == BASE_CLUSTERS
    await sotw.expect_silence()
    assert xds.state(NAME_TABLE).nack is None


# -- Node -----------------------------------------------------------------------------------


async def test_first_request_without_node_fails_the_stream(xds: XdsHarness) -> None:
    client = xds.connect(delta=False, send_node=False)
    client.request(CDS)
    err = await client.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node" in err.details()
    await xds.wait_for_connections(0)


@pytest.mark.parametrize(
    "node_id",
    ["not-a-node-id", "gateway~10.0.0.1~app-1.default~default.svc.cluster.local"],
    ids=["malformed", "bad-type"],
)
async def test_bad_node_id_fails_the_stream(xds: XdsHarness, node_id: str) -> None:
    client = xds.connect(delta=False, node=make_node(node_id))
    client.request(CDS)
    err = await client.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node.id" in err.details()
    await xds.wait_for_connections(0)


async def test_node_is_remembered_from_the_first_request(xds: XdsHarness, sotw: XdsClient) -> None:
    await sotw.fetch(CDS)  # the only request that carries the node
    await sotw.fetch(LDS)
    proxy = xds.connection().proxy
    assert proxy is not None
    assert proxy.id == "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local"


# -- Stream lifecycle -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["cancel", "half-close"])
async def test_closed_stream_leaves_no_state(xds: XdsHarness, sotw: XdsClient, how: str) -> None:
    await sotw.fetch(CDS)
    await sotw.fetch(EDS, [REVIEWS])
    assert len(xds.ads.connections) == 1

    if how == "cancel":
        sotw.call.cancel()
    else:
        sotw.close()
    await xds.wait_for_connections(0)

    # A push with nobody connected is harmless, and a new stream starts from scratch.
    xds.update(mesh(ratings=True))
    again = xds.connect(delta=False)
    response = await again.fetch(CDS)
    assert RATINGS in resource_names(response)
    assert len(xds.ads.connections) == 1


# -- Duplicates -----------------------------------------------------------------------------


async def test_no_duplicate_names_in_one_response(xds: XdsHarness, sotw: XdsClient) -> None:
    # The client repeats names; each still appears once (recv() checks every response).
    sotw.request(EDS, [REVIEWS, REVIEWS, DETAILS, DETAILS])
    response = await sotw.recv(EDS)
    assert sorted(resource_names(response)) == sorted([REVIEWS, DETAILS])
    sotw.ack(response)

    # A push that both adds and removes keeps old and new in one full set: still no repeats.
    await sotw.fetch(CDS)
    await sotw.fetch(LDS)
    xds.update(mesh(ratings=True, details=False))
    responses = await sotw.drain()
    assert responses


# -- Wildcard -------------------------------------------------------------------------------


async def test_legacy_wildcard_ends_once_names_are_given(xds: XdsHarness, sotw: XdsClient) -> None:
    """The xDS spec's own example: [] is "*" only until the client names something; after
    that an empty list unsubscribes from everything (what a proxyless gRPC client sends)."""
    first = await sotw.fetch(LDS)
    assert sorted(resource_names(first)) == BASE_LISTENERS
    assert xds.state(LDS).wildcard

    # "*" plus a name: still everything, and the named listener is answered at once.
    sotw.request(LDS, ["*", "0.0.0.0_9080"], nonce=first.nonce, version=first.version_info)
    both = await sotw.recv(LDS)
    assert sorted(resource_names(both)) == BASE_LISTENERS
    sotw.ack(both)

    # Only the name: the wildcard is dropped; the next full set holds just that listener.
    sotw.request(LDS, ["0.0.0.0_9080"], nonce=both.nonce, version=both.version_info)
    await xds.wait_until(lambda: not xds.state(LDS).wildcard, "the wildcard to be dropped")
    xds.update(mesh(ratings=True))
    only = await sotw.recv(LDS)
    assert resource_names(only) == ["0.0.0.0_9080"]
    sotw.ack(only)

    # An empty list now means "nothing", not "*" again: no listener is sent after it.
    sotw.request(LDS, [], nonce=only.nonce, version=only.version_info)
    await xds.wait_until(lambda: not xds.state(LDS).names, "the unsubscription")
    assert not xds.state(LDS).wildcard
    xds.update(mesh(ratings=True, details=False))
    for response in await sotw.collect():
        assert resource_names(response) == [], "listeners sent after unsubscribing from all"
