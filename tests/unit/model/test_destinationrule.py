"""DestinationRule traffic policies: parsing, validation errors naming fields, merge rules."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.destinationrule import (
    ConnectionPool,
    HttpCookie,
    HttpSettings,
    LoadBalancer,
    LocalityLbSetting,
    OutlierDetection,
    TcpSettings,
    parse_destination_rule,
)
from istiolite.model.validation import ValidationError


def rule(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"host": "reviews", **spec},
    }


FULL_POLICY: dict[str, Any] = {
    "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"enabled": True}},
    "connectionPool": {
        "tcp": {"maxConnections": 7, "connectTimeout": "250ms"},
        "http": {
            "http1MaxPendingRequests": 3,
            "http2MaxRequests": 11,
            "maxRequestsPerConnection": 2,
            "maxRetries": 4,
            "idleTimeout": "30s",
            "h2UpgradePolicy": "UPGRADE",
        },
    },
    "outlierDetection": {
        "consecutive5xxErrors": 5,
        "consecutiveGatewayErrors": 2,
        "interval": "10s",
        "baseEjectionTime": "1m",
        "maxEjectionPercent": 50,
        "minHealthPercent": 20,
    },
}


def test_parses_every_field_of_a_traffic_policy() -> None:
    policy = parse_destination_rule(rule({"trafficPolicy": FULL_POLICY})).traffic_policy
    assert policy is not None
    assert policy.load_balancer == LoadBalancer(
        simple="ROUND_ROBIN", locality_lb_setting=LocalityLbSetting(enabled=True)
    )
    assert policy.connection_pool == ConnectionPool(
        tcp=TcpSettings(max_connections=7, connect_timeout=0.25),
        http=HttpSettings(
            http1_max_pending_requests=3,
            http2_max_requests=11,
            max_requests_per_connection=2,
            max_retries=4,
            idle_timeout=30.0,
            h2_upgrade_policy="UPGRADE",
        ),
    )
    assert policy.outlier_detection == OutlierDetection(
        consecutive_5xx_errors=5,
        consecutive_gateway_errors=2,
        interval=10.0,
        base_ejection_time=60.0,
        max_ejection_percent=50,
        min_health_percent=20,
    )


@pytest.mark.parametrize(
    ("key", "algorithm_spec", "check"),
    [
        ("httpHeaderName", "x-user", lambda ch: ch.http_header_name == "x-user"),
        ("useSourceIp", True, lambda ch: ch.use_source_ip),
        ("httpQueryParameterName", "u", lambda ch: ch.http_query_parameter_name == "u"),
        (
            "httpCookie",
            {"name": "sticky", "path": "/", "ttl": "0s"},
            lambda ch: ch.http_cookie == HttpCookie("sticky", "/", 0.0),
        ),
    ],
)
def test_consistent_hash_keys(key: str, algorithm_spec: Any, check: Any) -> None:
    spec = {"trafficPolicy": {"loadBalancer": {"consistentHash": {key: algorithm_spec}}}}
    policy = parse_destination_rule(rule(spec)).traffic_policy
    assert policy and policy.load_balancer and policy.load_balancer.consistent_hash
    assert check(policy.load_balancer.consistent_hash)


def test_consistent_hash_algorithms() -> None:
    def ch(extra: dict[str, Any]) -> Any:
        spec = {"loadBalancer": {"consistentHash": {"httpHeaderName": "x", **extra}}}
        policy = parse_destination_rule(rule({"trafficPolicy": spec})).traffic_policy
        assert policy and policy.load_balancer
        return policy.load_balancer.consistent_hash

    assert ch({"maglev": {"tableSize": 65537}}).algorithm == "maglev"
    assert ch({"maglev": {"tableSize": 65537}}).maglev_table_size == 65537
    assert ch({"ringHash": {"minimumRingSize": 64}}).minimum_ring_size == 64
    assert ch({"minimumRingSize": 32}).minimum_ring_size == 32
    assert ch({}).algorithm == "ring_hash"


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (
            {"connectionPool": {"http": {"http1MaxPendingRequests": -1}}},
            "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
        ),
        (
            {"connectionPool": {"http": {"http2MaxRequests": "many"}}},
            "spec.trafficPolicy.connectionPool.http.http2MaxRequests",
        ),
        (
            {"connectionPool": {"http": {"idleTimeout": "soon"}}},
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
        ),
        (
            {"connectionPool": {"http": {"h2UpgradePolicy": "SOMETIMES"}}},
            "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
        ),
        (
            {"connectionPool": {"tcp": {"maxConnections": True}}},
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        ),
        (
            {"connectionPool": {"tcp": {"connectTimeout": "0s"}}},
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        ),
        ({"connectionPool": {}}, "spec.trafficPolicy.connectionPool"),
        (
            {"connectionPool": {"tcp": {"maxConnectionz": 1}}},
            "spec.trafficPolicy.connectionPool.tcp.maxConnectionz",
        ),
        ({"loadBalancer": {"simple": "FASTEST"}}, "spec.trafficPolicy.loadBalancer.simple"),
        (
            {"loadBalancer": {"simple": "RANDOM", "consistentHash": {}}},
            "spec.trafficPolicy.loadBalancer",
        ),
        (
            {"loadBalancer": {"consistentHash": {"httpHeaderName": "a", "useSourceIp": True}}},
            "spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp",
        ),
        (
            {"loadBalancer": {"consistentHash": {"httpCookie": {"name": "c"}}}},
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl",
        ),
        (
            {"loadBalancer": {"consistentHash": {"httpCookie": {"ttl": "1s"}}}},
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        ),
        (
            {"loadBalancer": {"consistentHash": {"ringHash": {}, "maglev": {}}}},
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev",
        ),
        (
            {"loadBalancer": {"consistentHash": {"useSourceIp": "yes"}}},
            "spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp",
        ),
        (
            {"outlierDetection": {"consecutive5xxErrors": -2}},
            "spec.trafficPolicy.outlierDetection.consecutive5xxErrors",
        ),
        (
            {"outlierDetection": {"maxEjectionPercent": 101}},
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        ),
        (
            {"outlierDetection": {"minHealthPercent": 200}},
            "spec.trafficPolicy.outlierDetection.minHealthPercent",
        ),
        (
            {"outlierDetection": {"interval": 5}},
            "spec.trafficPolicy.outlierDetection.interval",
        ),
        (
            {"outlierDetection": {"baseEjectionTime": "1 minute"}},
            "spec.trafficPolicy.outlierDetection.baseEjectionTime",
        ),
        (
            {"portLevelSettings": [{"loadBalancer": {}}]},
            "spec.trafficPolicy.portLevelSettings[0].port",
        ),
        (
            {"portLevelSettings": [{"port": {"number": 70000}}]},
            "spec.trafficPolicy.portLevelSettings[0].port.number",
        ),
        (
            {"portLevelSettings": [{"port": {"number": 80}}, {"port": {"number": 80}}]},
            "spec.trafficPolicy.portLevelSettings[1].port.number",
        ),
        (
            {
                "portLevelSettings": [
                    {"port": {"number": 80}, "connectionPool": {"http": {"maxRetries": -1}}}
                ]
            },
            "spec.trafficPolicy.portLevelSettings[0].connectionPool.http.maxRetries",
        ),
        ({"loadBalancr": {}}, "spec.trafficPolicy.loadBalancr"),
    ],
)
def test_validation_errors_name_the_field(policy: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_destination_rule(rule({"trafficPolicy": policy}))
    # portLevelSettings[0] without a port: the port selector is what is missing.
    assert err.value.field in (field, f"{field}.number"), str(err.value)


def test_subset_policy_errors_name_the_subset() -> None:
    spec = {
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {
                "name": "v2",
                "labels": {"version": "v2"},
                "trafficPolicy": {"outlierDetection": {"interval": "never"}},
            },
        ]
    }
    with pytest.raises(ValidationError) as err:
        parse_destination_rule(rule(spec))
    assert err.value.field == "spec.subsets[1].trafficPolicy.outlierDetection.interval"


MERGE_SPEC: dict[str, Any] = {
    "trafficPolicy": {
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "connectionPool": {"tcp": {"maxConnections": 100}},
        "outlierDetection": {"consecutive5xxErrors": 7},
        "portLevelSettings": [
            {"port": {"number": 9080}, "loadBalancer": {"simple": "RANDOM"}},
        ],
    },
    "subsets": [
        {"name": "plain", "labels": {"version": "v0"}},
        {
            "name": "v1",
            "labels": {"version": "v1"},
            "trafficPolicy": {
                "connectionPool": {"http": {"http1MaxPendingRequests": 1}},
                "portLevelSettings": [
                    {"port": {"number": 8443}, "outlierDetection": {"consecutive5xxErrors": 1}}
                ],
            },
        },
    ],
}


def test_merge_top_level_only() -> None:
    dr = parse_destination_rule(rule(MERGE_SPEC))
    policy = dr.policy_for("", 80)
    assert policy is not None and policy.port_level_settings == ()
    assert policy.load_balancer == LoadBalancer(simple="ROUND_ROBIN")
    assert policy.connection_pool == ConnectionPool(tcp=TcpSettings(max_connections=100))
    assert policy.outlier_detection == OutlierDetection(consecutive_5xx_errors=7)
    # An unknown subset has no policy of its own: the top-level one applies.
    assert dr.policy_for("nope", 80) == policy
    assert dr.policy_for("plain", 80) == policy


def test_top_level_port_settings_replace_everything_for_that_port() -> None:
    policy = parse_destination_rule(rule(MERGE_SPEC)).policy_for("", 9080)
    assert policy is not None
    assert policy.load_balancer == LoadBalancer(simple="RANDOM")
    # As Istio: port-level settings do not inherit from the top-level ones.
    assert policy.connection_pool is None
    assert policy.outlier_detection is None


def test_subset_overrides_setting_by_setting() -> None:
    policy = parse_destination_rule(rule(MERGE_SPEC)).policy_for("v1", 80)
    assert policy is not None
    assert policy.connection_pool == ConnectionPool(http=HttpSettings(http1_max_pending_requests=1))
    assert policy.load_balancer == LoadBalancer(simple="ROUND_ROBIN")  # inherited
    assert policy.outlier_detection == OutlierDetection(consecutive_5xx_errors=7)  # inherited


def test_subset_on_a_top_level_port_inherits_the_port_level_result() -> None:
    policy = parse_destination_rule(rule(MERGE_SPEC)).policy_for("v1", 9080)
    assert policy is not None
    assert policy.load_balancer == LoadBalancer(simple="RANDOM")
    assert policy.outlier_detection is None
    assert policy.connection_pool == ConnectionPool(http=HttpSettings(http1_max_pending_requests=1))


def test_subset_port_settings_win_last() -> None:
    policy = parse_destination_rule(rule(MERGE_SPEC)).policy_for("v1", 8443)
    assert policy is not None
    assert policy.outlier_detection == OutlierDetection(consecutive_5xx_errors=1)
    assert policy.load_balancer is None and policy.connection_pool is None


def test_no_policy_anywhere() -> None:
    dr = parse_destination_rule(rule({"subsets": [{"name": "v1", "labels": {"a": "b"}}]}))
    assert dr.traffic_policy is None
    assert dr.policy_for("v1", 80) is None
    assert dr.policy_for("", 80) is None
