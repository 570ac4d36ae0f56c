"""Incremental (Delta) ADS conversations with the real server: the rules of DESIGN §4.

Every response read through the client is also checked for duplicate names (in `resources` and
in `removed_resources`, and for a name both sent and removed).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

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
    DeltaDiscoveryResponse,
    XdsClient,
    XdsHarness,
    delta_versions,
    make_node,
    mesh,
    resource_names,
    resources,
    types_of,
)

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ALL_EDS = [REVIEWS, DETAILS, RATINGS, RATINGS_9082]
ALL_RDS = ["9080", "9081", "9082"]


async def subscribe_all(client: XdsClient) -> dict[str, DeltaDiscoveryResponse]:
    """As Envoy starts: CDS and LDS wildcard; EDS and RDS by name, including ratings' names that
    do not exist yet. Returns the first response of each type."""
    return {
        CDS: await client.fetch(CDS),
        EDS: await client.fetch(EDS, ALL_EDS),
        LDS: await client.fetch(LDS),
        RDS: await client.fetch(RDS, ALL_RDS),
    }


def addresses(assignment: Any) -> list[str]:
    return [
        lb.endpoint.address.socket_address.address
        for group in assignment.endpoints
        for lb in group.lb_endpoints
    ]


def removed(responses: list[DeltaDiscoveryResponse], type_url: str) -> list[str]:
    return sorted(n for r in responses if r.type_url == type_url for n in r.removed_resources)


def sent(responses: list[DeltaDiscoveryResponse], type_url: str) -> list[str]:
    return sorted(n for r in responses if r.type_url == type_url for n in resource_names(r))


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
    xds: XdsHarness, delta: XdsClient, type_url: str, names: list[str], expected: list[str]
) -> None:
    delta.delta_request(type_url, names)
    response = await delta.recv(type_url)
    assert response.nonce
    assert response.system_version_info
    assert sorted(resource_names(response)) == expected
    assert list(response.removed_resources) == []
    assert all(r.version for r in response.resources)

    delta.ack(response)
    await xds.wait_acked(response)
    await delta.expect_silence()

    state = xds.state(type_url)
    assert state.nonce_sent == response.nonce
    assert state.version_acked == response.system_version_info
    assert state.nack is None
    assert state.sent == delta_versions(response)


async def test_resource_versions_are_content_hashes(xds: XdsHarness) -> None:
    """The same resource has the same version on every stream; a changed one a new version."""
    one = xds.connect(delta=True)
    two = xds.connect(delta=True)
    first = delta_versions(await one.fetch(CDS))
    assert delta_versions(await two.fetch(CDS)) == first

    xds.update(mesh(reviews_app_protocol="http2"))
    changed = delta_versions(await one.recv(CDS))
    assert list(changed) == [REVIEWS]
    assert changed[REVIEWS] != first[REVIEWS]
    assert delta_versions(await two.recv(CDS)) == changed


# -- NACK -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_url", "names", "changed", "expected"),
    [
        (CDS, [], mesh(ratings=True), sorted([RATINGS, RATINGS_9082])),
        (EDS, [REVIEWS], mesh(reviews_endpoints=["10.1.0.7"]), [REVIEWS]),
        (LDS, [], mesh(ratings=True), ["0.0.0.0_9082"]),
    ],
    ids=["CDS", "EDS", "LDS"],
)
async def test_nack_is_recorded_and_the_same_content_not_resent(
    xds: XdsHarness,
    delta: XdsClient,
    type_url: str,
    names: list[str],
    changed: list,
    expected: list[str],
) -> None:
    delta.delta_request(type_url, names)
    rejected = await delta.recv(type_url)
    delta.nack(rejected, "rejected by test")
    await xds.wait_until(lambda: xds.state(type_url).nack is not None, "the NACK")
    await delta.expect_silence()

    state = xds.state(type_url)
    assert state.nack is not None
    assert state.nack.message == "rejected by test"
    assert state.nack.nonce == rejected.nonce
    assert state.version_acked == ""

    # A new push of the same config: the rejected content is not sent again.
    xds.update(mesh())
    await delta.expect_silence()

    # New content is (and only the new content).
    xds.update(changed)
    fresh = await delta.recv(type_url)
    assert sorted(resource_names(fresh)) == expected
    delta.ack(fresh)
    await xds.wait_acked(fresh)
    assert xds.state(type_url).nack is None
    assert xds.state(type_url).version_acked == fresh.system_version_info


# -- Subscriptions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_url", "first", "added"),
    [(EDS, REVIEWS, DETAILS), (RDS, "9080", "9081")],
    ids=["EDS", "RDS"],
)
async def test_newly_subscribed_name_is_answered_at_once(
    delta: XdsClient, type_url: str, first: str, added: str
) -> None:
    response = await delta.fetch(type_url, [first])
    assert resource_names(response) == [first]

    delta.delta_request(type_url, [added])
    answer = await delta.recv(type_url)
    assert resource_names(answer) == [added]
    assert list(answer.removed_resources) == []


@pytest.mark.parametrize(
    ("type_url", "existing", "missing", "expected_after"),
    [
        (EDS, REVIEWS, RATINGS_9082, [RATINGS_9082]),
        # Route "9080" gains ratings' virtual host, so it changes too.
        (RDS, "9080", "9082", ["9080", "9082"]),
    ],
    ids=["EDS", "RDS"],
)
async def test_missing_name_is_announced_removed_then_sent_when_it_appears(
    xds: XdsHarness,
    delta: XdsClient,
    type_url: str,
    existing: str,
    missing: str,
    expected_after: list[str],
) -> None:
    delta.delta_request(type_url, [existing, missing])
    response = await delta.recv(type_url)
    assert resource_names(response) == [existing]
    assert list(response.removed_resources) == [missing]
    delta.ack(response)
    await delta.expect_silence()

    xds.update(mesh(ratings=True))
    later = await delta.recv(type_url)
    assert sorted(resource_names(later)) == expected_after
    assert list(later.removed_resources) == []


async def test_subscription_changes_apply_whatever_the_nonce(
    xds: XdsHarness, delta: XdsClient
) -> None:
    first = await delta.fetch(EDS, [REVIEWS])
    await xds.wait_acked(first)
    xds.update(mesh(reviews_endpoints=["10.1.0.9"]))
    second = await delta.recv(EDS)
    assert resource_names(second) == [REVIEWS]

    # Still answering the first response (stale nonce), the client subscribes to details.
    delta.delta_request(EDS, [DETAILS], nonce=first.nonce)
    third = await delta.recv(EDS)
    assert resource_names(third) == [DETAILS]
    stream = xds.connection().stream
    assert stream.stale_requests == 1
    assert xds.state(EDS).version_acked == first.system_version_info  # the stale one is no ACK

    # An unsubscription on an old nonce is applied as well: reviews' changes stop coming.
    delta.delta_request(EDS, unsubscribe=[REVIEWS], nonce=second.nonce)
    await xds.wait_until(lambda: xds.state(EDS).names == {DETAILS}, "the unsubscription")
    await delta.expect_silence()
    xds.update(mesh(reviews_endpoints=["10.1.0.8"]))
    await delta.expect_silence()

    # And a subscription with a nonce the server never sent.
    delta.delta_request(EDS, [REVIEWS], nonce="no-such-nonce")
    fourth = await delta.recv(EDS)
    assert resource_names(fourth) == [REVIEWS]
    assert addresses(resources(fourth)[REVIEWS]) == ["10.1.0.8"]


async def test_unsubscribing_a_name_the_wildcard_still_covers_is_answered(
    xds: XdsHarness, delta: XdsClient
) -> None:
    """Wildcard plus explicit names: on unsubscribing a name the client cannot know whether the
    wildcard keeps it, so the server says (xDS spec, "Unsubscribing from Resources")."""
    nowhere = "outbound|1||nowhere.default.svc.cluster.local"
    await delta.fetch(CDS)  # legacy wildcard
    delta.delta_request(CDS, [REVIEWS, nowhere])
    named = await delta.recv(CDS)
    assert resource_names(named) == [REVIEWS]  # answered at once, though unchanged
    assert list(named.removed_resources) == [nowhere]
    delta.ack(named)

    delta.delta_request(CDS, unsubscribe=[REVIEWS, nowhere])
    answer = await delta.recv(CDS)
    assert resource_names(answer) == [REVIEWS]  # still covered by the wildcard: keep it
    assert list(answer.removed_resources) == [nowhere]  # not covered: drop it
    assert xds.state(CDS).wildcard


# -- Deletions and ordering -----------------------------------------------------------------


async def test_deleted_service_is_named_in_removed_resources(
    xds: XdsHarness, delta: XdsClient
) -> None:
    await subscribe_all(delta)

    xds.update(mesh(details=False))
    responses = await delta.drain()

    assert removed(responses, CDS) == [DETAILS]
    assert removed(responses, EDS) == [DETAILS]
    assert removed(responses, LDS) == ["0.0.0.0_9081"]
    assert removed(responses, RDS) == ["9081"]
    # Nothing else changed, so nothing else travels.
    assert all(not r.resources for r in responses), types_of(responses)
    # Make before break: the listener goes before the cluster it used.
    kinds = types_of(responses)
    assert kinds.index("LDS") < kinds.index("CDS"), kinds
    assert DETAILS not in xds.state(CDS).sent
    await delta.expect_silence()


async def test_push_order_is_cds_eds_lds_rds_then_removals(
    xds: XdsHarness, delta: XdsClient
) -> None:
    await subscribe_all(delta)

    xds.update(mesh(ratings=True, details=False))
    responses = await delta.drain()

    additions = [r for r in responses if r.resources]
    removals = [r for r in responses if r.removed_resources]
    assert types_of(additions) == ["CDS", "EDS", "LDS", "RDS"], types_of(responses)
    assert sent(responses, CDS) == sorted([RATINGS, RATINGS_9082])
    assert sent(responses, EDS) == sorted([RATINGS, RATINGS_9082])
    assert sent(responses, LDS) == ["0.0.0.0_9082"]
    assert sent(responses, RDS) == ["9080", "9082"]

    last_addition = max(responses.index(r) for r in additions)
    assert all(responses.index(r) > last_addition for r in removals), types_of(responses)
    assert removed(responses, CDS) == [DETAILS]
    assert removed(responses, LDS) == ["0.0.0.0_9081"]
    removal_kinds = types_of(removals)
    assert removal_kinds.index("LDS") < removal_kinds.index("CDS"), removal_kinds


# -- Endpoints ------------------------------------------------------------------------------


async def test_endpoints_are_resent_after_their_cluster_changes(
    xds: XdsHarness, delta: XdsClient
) -> None:
    first = await subscribe_all(delta)
    before = resources(first[EDS])

    # http -> http2: the cluster gains HTTP/2 options; endpoints, listeners and routes stay.
    xds.update(mesh(reviews_app_protocol="http2"))
    responses = await delta.drain()

    assert types_of(responses) == ["CDS", "EDS"]
    cds, eds = responses
    assert resource_names(cds) == [REVIEWS]
    assert HTTP_OPTIONS in resources(cds)[REVIEWS].typed_extension_protocol_options
    assert resource_names(eds) == [REVIEWS]
    assert resources(eds)[REVIEWS] == before[REVIEWS]
    # Same content, same version: it is re-sent because the cluster was, not because it changed.
    assert delta_versions(eds) == {REVIEWS: delta_versions(first[EDS])[REVIEWS]}


async def test_service_without_endpoints_gets_an_empty_load_assignment(
    xds: XdsHarness, delta: XdsClient
) -> None:
    response = await delta.fetch(EDS, [REVIEWS, DETAILS])
    assignments = resources(response)
    assert assignments[DETAILS].cluster_name == DETAILS
    assert list(assignments[DETAILS].endpoints) == []
    assert list(response.removed_resources) == []

    # Endpoints going away: an explicit empty assignment, not a removal.
    xds.update(mesh(reviews_endpoints=[]))
    emptied = await delta.recv(EDS)
    assert resource_names(emptied) == [REVIEWS]
    assert list(resources(emptied)[REVIEWS].endpoints) == []
    assert list(emptied.removed_resources) == []


# -- Reconnect ------------------------------------------------------------------------------


async def test_reconnect_with_initial_resource_versions_sends_only_changes(
    xds: XdsHarness,
) -> None:
    xds.update(mesh(ratings=True))
    first = xds.connect(delta=True)
    have_clusters = delta_versions(await first.fetch(CDS))
    have_endpoints = delta_versions(await first.fetch(EDS, ALL_EDS))
    assert set(have_clusters) >= {REVIEWS, DETAILS, RATINGS, RATINGS_9082}
    first.call.cancel()
    await xds.wait_for_connections(0)

    # While the proxy was away: reviews' cluster and endpoints changed, details was deleted.
    xds.update(mesh(ratings=True, details=False, reviews_app_protocol="http2",
                    reviews_endpoints=["10.1.0.5"]))  # fmt: skip

    second = xds.connect(delta=True)
    second.delta_request(CDS, initial_versions=have_clusters)
    clusters = await second.recv(CDS)
    assert resource_names(clusters) == [REVIEWS]
    assert list(clusters.removed_resources) == [DETAILS]
    assert delta_versions(clusters)[REVIEWS] != have_clusters[REVIEWS]
    second.ack(clusters)

    second.delta_request(EDS, ALL_EDS, initial_versions=have_endpoints)
    endpoints = await second.recv(EDS)
    # ratings' assignments did not change: the client has them, they are not sent again.
    assert resource_names(endpoints) == [REVIEWS]
    assert list(endpoints.removed_resources) == [DETAILS]
    second.ack(endpoints)
    await second.expect_silence()

    state = xds.state(CDS)
    assert DETAILS not in state.sent
    assert state.sent[RATINGS] == have_clusters[RATINGS]


async def test_reconnect_with_nothing_changed_sends_nothing_new(xds: XdsHarness) -> None:
    first = xds.connect(delta=True)
    have_clusters = delta_versions(await first.fetch(CDS))
    have_endpoints = delta_versions(await first.fetch(EDS, [REVIEWS, DETAILS]))
    first.call.cancel()
    await xds.wait_for_connections(0)

    second = xds.connect(delta=True)
    second.delta_request(CDS, initial_versions=have_clusters)
    clusters = await second.recv(CDS)
    assert resource_names(clusters) == []
    assert list(clusters.removed_resources) == []
    second.ack(clusters)
    second.delta_request(EDS, [REVIEWS, DETAILS], initial_versions=have_endpoints)
    endpoints = await second.recv(EDS)
    assert resource_names(endpoints) == []
    assert list(endpoints.removed_resources) == []


async def test_reconnect_resends_endpoints_of_a_cluster_it_resent(xds: XdsHarness) -> None:
    """After a reconnect the changed cluster is sent again; Envoy then needs its endpoints again
    even though their version did not change, or the cluster stays warming."""
    first = xds.connect(delta=True)
    have_clusters = delta_versions(await first.fetch(CDS))
    have_endpoints = delta_versions(await first.fetch(EDS, [REVIEWS, DETAILS]))
    first.call.cancel()
    await xds.wait_for_connections(0)

    xds.update(mesh(reviews_app_protocol="http2"))
    second = xds.connect(delta=True)
    second.delta_request(CDS, initial_versions=have_clusters)
    clusters = await second.recv(CDS)
    assert resource_names(clusters) == [REVIEWS]
    second.ack(clusters)
    second.delta_request(EDS, [REVIEWS, DETAILS], initial_versions=have_endpoints)
    endpoints = await second.recv(EDS)
    assert resource_names(endpoints) == [REVIEWS]
    assert delta_versions(endpoints)[REVIEWS] == have_endpoints[REVIEWS]


# -- Istio-only types -----------------------------------------------------------------------


async def test_istio_only_types_get_an_empty_answer(xds: XdsHarness, delta: XdsClient) -> None:
    for type_url in (NAME_TABLE, PROXY_CONFIG):
        delta.delta_request(type_url)
        response = await delta.recv(type_url)
        assert response.nonce
        assert list(response.resources) == []
        assert list(response.removed_resources) == []
        delta.ack(response)

    cds = await delta.fetch(CDS)
    assert sorted(resource_names(cds)) == BASE_CLUSTERS
    await delta.expect_silence()
    assert xds.state(PROXY_CONFIG).nack is None


# -- Node -----------------------------------------------------------------------------------


async def test_first_request_without_node_fails_the_stream(xds: XdsHarness) -> None:
    client = xds.connect(delta=True, send_node=False)
    client.delta_request(CDS)
    err = await client.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node" in err.details()
    await xds.wait_for_connections(0)


@pytest.mark.parametrize(
    "node_id",
    ["not-a-node-id", "sidecar~~app-1.default~default.svc.cluster.local"],
    ids=["malformed", "no-ip"],
)
async def test_bad_node_id_fails_the_stream(xds: XdsHarness, node_id: str) -> None:
    client = xds.connect(delta=True, node=make_node(node_id))
    client.delta_request(CDS)
    err = await client.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node.id" in err.details()
    await xds.wait_for_connections(0)


# -- Stream lifecycle -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["cancel", "half-close"])
async def test_closed_stream_leaves_no_state(xds: XdsHarness, delta: XdsClient, how: str) -> None:
    await delta.fetch(CDS)
    await delta.fetch(EDS, [REVIEWS])
    assert len(xds.ads.connections) == 1

    if how == "cancel":
        delta.call.cancel()
    else:
        delta.close()
    await xds.wait_for_connections(0)

    # A new stream starts from scratch: it gets everything again.
    again = xds.connect(delta=True)
    response = await again.fetch(CDS)
    assert sorted(resource_names(response)) == BASE_CLUSTERS
    assert len(xds.ads.connections) == 1


# -- Duplicates -----------------------------------------------------------------------------


async def test_no_duplicate_names_in_one_response(xds: XdsHarness, delta: XdsClient) -> None:
    delta.delta_request(EDS, [REVIEWS, REVIEWS, DETAILS, RATINGS, RATINGS])
    response = await delta.recv(EDS)
    assert sorted(resource_names(response)) == sorted([REVIEWS, DETAILS])
    assert list(response.removed_resources) == [RATINGS]
    delta.ack(response)

    # Subscribing to a name already held, together with a new one: each appears once.
    delta.delta_request(EDS, [REVIEWS, RATINGS_9082])
    again = await delta.recv(EDS)
    assert resource_names(again) == [REVIEWS]
    assert list(again.removed_resources) == [RATINGS_9082]
