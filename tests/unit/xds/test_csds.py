"""CSDS pieces without a server: node matchers and the per-resource status mapping."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.status.v3 import csds_pb2
from envoy.type.matcher.v3 import node_pb2, string_pb2, value_pb2

from istiolite import type_urls
from istiolite.networking.resource import Resource, to_resource
from istiolite.xds.csds import (
    MatcherError,
    node_matches,
    request_matches,
    string_matches,
    type_configs,
    value_matches,
)
from istiolite.xds.protocol import Nack, TypeState

ACKED = config_dump_shared_pb2.ACKED
NACKED = config_dump_shared_pb2.NACKED
REQUESTED = config_dump_shared_pb2.REQUESTED
DOES_NOT_EXIST = config_dump_shared_pb2.DOES_NOT_EXIST

METADATA: dict[str, Any] = {
    "NAMESPACE": "shop",
    "LABELS": {"app": "web", "version": "v2"},
    "INSTANCE_IPS": "10.0.0.1,10.0.0.2",
    "WEIGHT": 3.0,
    "MESH": True,
    "TAGS": ["a", "b"],
    "NOTHING": None,
}


def value(**kwargs: Any) -> value_pb2.ValueMatcher:
    return value_pb2.ValueMatcher(**kwargs)


@pytest.mark.parametrize(
    ("matcher", "subject", "expected"),
    [
        ({"exact": "abc"}, "abc", True),
        ({"exact": "abc"}, "abcd", False),
        ({"exact": "ABC", "ignore_case": True}, "abc", True),
        ({"prefix": "ab"}, "abc", True),
        ({"suffix": "bc"}, "abc", True),
        ({"suffix": "BC"}, "abc", False),
        ({"contains": "b"}, "abc", True),
        ({"safe_regex": {"regex": "a.c"}}, "abc", True),
        ({"safe_regex": {"regex": "a"}}, "abc", False),  # a full match, as RE2 in Envoy
    ],
)
def test_string_matcher(matcher: dict[str, Any], subject: str, expected: bool) -> None:
    assert string_matches(string_pb2.StringMatcher(**matcher), subject) is expected


def test_string_matcher_errors() -> None:
    with pytest.raises(MatcherError):
        string_matches(string_pb2.StringMatcher(), "x")
    with pytest.raises(MatcherError):
        string_matches(string_pb2.StringMatcher(safe_regex={"regex": "("}), "x")


@pytest.mark.parametrize(
    ("path", "matcher", "expected"),
    [
        (["NAMESPACE"], value(string_match={"exact": "shop"}), True),
        (["LABELS", "version"], value(string_match={"prefix": "v"}), True),
        (["LABELS", "nope"], value(string_match={"prefix": "v"}), False),
        (["LABELS", "app", "deeper"], value(present_match=True), False),
        (["LABELS", "app"], value(present_match=True), True),
        (["MISSING"], value(present_match=True), False),
        (["MISSING"], value(present_match=False), False),  # Envoy: false never matches
        (["NOTHING"], value(present_match=True), True),
        (["NOTHING"], value(null_match={}), True),
        (["NAMESPACE"], value(null_match={}), False),
        (["WEIGHT"], value(double_match={"exact": 3}), True),
        (["WEIGHT"], value(double_match={"range": {"start": 1, "end": 3}}), False),
        (["WEIGHT"], value(double_match={"range": {"start": 3, "end": 4}}), True),
        (["MESH"], value(bool_match=True), True),
        (["MESH"], value(double_match={"exact": 1}), False),  # a bool is not a number
        (["TAGS"], value(list_match={"one_of": {"string_match": {"exact": "b"}}}), True),
        (["TAGS"], value(list_match={"one_of": {"string_match": {"exact": "c"}}}), False),
        (
            ["NAMESPACE"],
            value(
                or_match={
                    "value_matchers": [
                        {"string_match": {"exact": "x"}},
                        {"string_match": {"exact": "shop"}},
                    ]
                }
            ),
            True,
        ),
    ],
)
def test_metadata_matcher(path: list[str], matcher: value_pb2.ValueMatcher, expected: bool) -> None:
    node = node_pb2.NodeMatcher(
        node_metadatas=[{"path": [{"key": k} for k in path], "value": matcher}]
    )
    assert node_matches(node, "sidecar~1~a.b~b.svc.cluster.local", METADATA) is expected


def test_value_matcher_without_pattern_is_an_error() -> None:
    with pytest.raises(MatcherError):
        value_matches(value_pb2.ValueMatcher(), "x")


def test_request_matchers_are_or_and_none_is_everything() -> None:
    exact = node_pb2.NodeMatcher(node_id={"exact": "a"})
    other = node_pb2.NodeMatcher(node_id={"exact": "b"})
    assert request_matches(csds_pb2.ClientStatusRequest(), "z", {})
    assert request_matches(csds_pb2.ClientStatusRequest(node_matchers=[exact, other]), "b", {})
    assert not request_matches(csds_pb2.ClientStatusRequest(node_matchers=[exact]), "b", {})


# -- the status mapping ----------------------------------------------------------------------


def cluster(name: str, timeout: int = 1) -> Resource:
    msg = cluster_pb2.Cluster(name=name, connect_timeout={"seconds": timeout})
    return to_resource(name, type_urls.CLUSTER, msg)


def state_with(sent: dict[str, Resource], **fields: Any) -> TypeState:
    state = TypeState(type_urls.CLUSTER, wildcard=True, nonce_sent="n-1", version_sent="v1")
    state.sent = {n: r.version for n, r in sent.items()}
    state.sent_at = 10.0
    for key, val in fields.items():
        setattr(state, key, val)
    return state


def statuses(configs: list[Any]) -> dict[str, tuple[int, int]]:
    return {c.name: (c.client_status, c.config_status) for c in configs}


def test_ack_of_an_earlier_response_is_not_the_ack_of_the_last() -> None:
    """Even with the same version string sent twice, only the ACK of the last nonce counts."""
    a = cluster("a")
    state = state_with({"a": a}, version_acked="v1", acked_nonce="n-0", acked_at=9.0)
    assert statuses(type_configs(state, {"a": a})) == {"a": (REQUESTED, csds_pb2.STALE)}
    state.acked_nonce, state.acked_at = "n-1", 11.0
    assert statuses(type_configs(state, {"a": a})) == {"a": (ACKED, csds_pb2.SYNCED)}


def test_nack_of_an_earlier_response_does_not_mark_the_newer_one() -> None:
    a = cluster("a")
    nack = Nack(nonce="n-0", rejected_version="v0", message="bad", at=5.0)
    state = state_with({"a": a}, nack=nack)
    [entry] = type_configs(state, {"a": a})
    assert (entry.client_status, entry.config_status) == (REQUESTED, csds_pb2.STALE)
    assert not entry.HasField("error_state")
    state.nack = Nack(nonce="n-1", rejected_version="v1", message="bad", at=11.0)
    [entry] = type_configs(state, {"a": a}, clock_offset=1_700_000_000.0)
    assert (entry.client_status, entry.config_status) == (NACKED, csds_pb2.ERROR)
    assert entry.error_state.details == "bad"
    assert entry.error_state.last_update_attempt.seconds == 1_700_000_011


def test_body_comes_from_what_was_sent_when_the_config_moved_on() -> None:
    old, new = cluster("a", 1), cluster("a", 2)
    state = state_with(
        {"a": old}, version_acked="v1", acked_nonce="n-1", acked_at=11.0, sent_resources={"a": old}
    )
    [entry] = type_configs(state, {"a": new})
    assert (entry.client_status, entry.config_status) == (ACKED, csds_pb2.STALE)
    assert entry.version_info == old.version
    assert entry.xds_config.value == old.payload
    # Removed from istiolite's config since: still what the client has, still STALE.
    [entry] = type_configs(state, {})
    assert (entry.client_status, entry.config_status) == (ACKED, csds_pb2.STALE)


def test_nothing_sent_yet() -> None:
    state = TypeState(type_urls.ENDPOINT, names=frozenset({"x", "y"}))
    configs = type_configs(state, {"x": cluster("x")})
    assert statuses(configs) == {
        "x": (REQUESTED, csds_pb2.NOT_SENT),
        "y": (DOES_NOT_EXIST, csds_pb2.NOT_SENT),
    }
