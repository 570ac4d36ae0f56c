"""Values that fit the YAML but not Envoy (issue 9, finding 3): each is a validation error naming
the field, not an exception in generation nor a NACK of the whole CDS/RDS update."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.kinds import parse_object
from istiolite.model.validation import ValidationError

ROUTE = {"destination": {"host": "reviews"}}


def obj(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": {"name": "bad", "namespace": "shop"},
        "spec": spec,
    }


def dr(policy: dict[str, Any]) -> dict[str, Any]:
    return obj("DestinationRule", {"host": "reviews", "trafficPolicy": policy})


def vs(http: dict[str, Any]) -> dict[str, Any]:
    return obj("VirtualService", {"hosts": ["reviews"], "http": [http]})


def tcp_pool(tcp: dict[str, Any]) -> dict[str, Any]:
    return dr({"connectionPool": {"tcp": tcp}})


def hash_lb(consistent: dict[str, Any]) -> dict[str, Any]:
    return dr({"loadBalancer": {"consistentHash": consistent}})


def header_ops(ops: dict[str, Any]) -> dict[str, Any]:
    return vs({"route": [ROUTE], "headers": {"request": ops}})


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, object, field named, words in the message)
    (
        "connectTimeout 1e20h",
        tcp_pool({"connectTimeout": "100000000000000000000h"}),
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "longer than",
    ),
    (
        # Found by the fuzz test: a valid Duration Envoy still refuses (past 2^63 ns).
        "connectTimeout 9223372036s",
        tcp_pool({"connectTimeout": "9223372036s"}),
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "longer than",
    ),
    (
        "duration whose digits overflow a float",
        tcp_pool({"connectTimeout": "1" * 400 + "s"}),
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "longer than",
    ),
    (
        "route weight 2^32",
        vs({"route": [{**ROUTE, "weight": 4294967296}]}),
        "spec.http[0].route[0].weight",
        "2147483647",
    ),
    (
        "weights summing past 2^32-1",
        vs({"route": [{**ROUTE, "weight": 2**31 - 1}] * 3}),
        "spec.http[0].route",
        "add up to 6442450941",
    ),
    (
        "tcp route weights summing past 2^32-1",
        obj(
            "VirtualService",
            {"hosts": ["reviews"], "tcp": [{"route": [{**ROUTE, "weight": 2**31 - 1}] * 3}]},
        ),
        "spec.tcp[0].route",
        "add up to",
    ),
    (
        "retries.attempts 2^32",
        vs({"route": [ROUTE], "retries": {"attempts": 4294967296}}),
        "spec.http[0].retries.attempts",
        "2147483647",
    ),
    ("timeout 1e400s", vs({"route": [ROUTE], "timeout": "1e400s"}), "spec.http[0].timeout", ""),
    (
        "timeout of 10,001 years",
        vs({"route": [ROUTE], "timeout": "87660001h"}),
        "spec.http[0].timeout",
        "longer than",
    ),
    (
        "perTryTimeout huge",
        vs({"route": [ROUTE], "retries": {"attempts": 2, "perTryTimeout": "9" * 30 + "s"}}),
        "spec.http[0].retries.perTryTimeout",
        "longer than",
    ),
    (
        "fault fixedDelay 0s (Envoy wants > 0)",
        vs({"route": [ROUTE], "fault": {"delay": {"fixedDelay": "0s"}}}),
        "spec.http[0].fault.delay.fixedDelay",
        "1ms",
    ),
    (
        "ServiceEntry endpoint weight 2^32",
        obj(
            "ServiceEntry",
            {
                "hosts": ["api.example.com"],
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                "resolution": "STATIC",
                "endpoints": [{"address": "10.0.0.1", "weight": 4294967296}],
            },
        ),
        "spec.endpoints[0].weight",
        "4294967295",
    ),
    (
        "WorkloadEntry weight 2^32",
        obj("WorkloadEntry", {"address": "10.0.0.1", "weight": 4294967296}),
        "spec.weight",
        "4294967295",
    ),
    (
        "cookie TTL huge",
        hash_lb({"httpCookie": {"name": "user", "ttl": "99999999999999999h"}}),
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl",
        "longer than",
    ),
    (
        "outlier interval huge",
        dr({"outlierDetection": {"interval": "100000000000000000000h"}}),
        "spec.trafficPolicy.outlierDetection.interval",
        "longer than",
    ),
    (
        "outlier baseEjectionTime huge",
        dr({"outlierDetection": {"baseEjectionTime": "100000000000000000000m"}}),
        "spec.trafficPolicy.outlierDetection.baseEjectionTime",
        "longer than",
    ),
    (
        "TCP keepalive time past uint32 seconds",
        tcp_pool({"tcpKeepalive": {"time": "4294967296s"}}),
        "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
        "4294967295s",
    ),
    (
        "TCP keepalive interval past uint32 seconds",
        tcp_pool({"tcpKeepalive": {"interval": "2000000h"}}),
        "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval",
        "4294967295s",
    ),
    (
        "http idleTimeout huge",
        dr({"connectionPool": {"http": {"idleTimeout": "100000000000000000000h"}}}),
        "spec.trafficPolicy.connectionPool.http.idleTimeout",
        "longer than",
    ),
    (
        "tcp idleTimeout huge",
        tcp_pool({"idleTimeout": "100000000000000000000h"}),
        "spec.trafficPolicy.connectionPool.tcp.idleTimeout",
        "longer than",
    ),
    (
        "maxConnectionDuration huge",
        tcp_pool({"maxConnectionDuration": "100000000000000000000h"}),
        "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration",
        "longer than",
    ),
    (
        "header set with CRLF in the name",
        header_ops({"set": {"x-a\r\nx-b": "1"}}),
        "spec.http[0].headers.request.set.x-a\r\nx-b",
        "letters, digits",
    ),
    (
        "header set value with CRLF",
        header_ops({"set": {"x-a": "1\r\nx-b: 2"}}),
        "spec.http[0].headers.request.set.x-a",
        "CR, LF or NUL",
    ),
    (
        "header set :path",
        header_ops({"set": {":path": "/admin"}}),
        "spec.http[0].headers.request.set.:path",
        "cannot be modified",
    ),
    (
        "header add Host",
        header_ops({"add": {"Host": "evil"}}),
        "spec.http[0].headers.request.add.Host",
        "cannot be modified",
    ),
    (
        "header remove :authority",
        header_ops({"remove": [":authority"]}),
        "spec.http[0].headers.request.remove[0]",
        "cannot be modified",
    ),
    (
        "response header in a route destination: host",
        vs({"route": [{**ROUTE, "headers": {"response": {"remove": ["host"]}}}]}),
        "spec.http[0].route[0].headers.response.remove[0]",
        "cannot be modified",
    ),
    (
        "header match name with LF",
        vs({"route": [ROUTE], "match": [{"headers": {"x-a\nb": {"exact": "1"}}}]}),
        "spec.http[0].match[0].headers.x-a\nb",
        "CR, LF or NUL",
    ),
    (
        "directResponse body over 4 KB",
        vs({"directResponse": {"status": 200, "body": {"string": "x" * 4097}}}),
        "spec.http[0].directResponse.body.string",
        "4097 bytes",
    ),
    (
        "directResponse body over 4 KB in UTF-8 bytes",
        vs({"directResponse": {"status": 200, "body": {"string": "é" * 2049}}}),
        "spec.http[0].directResponse.body.string",
        "4098 bytes",
    ),
    (
        "maglev table size 4 (not prime)",
        hash_lb({"useSourceIp": True, "maglev": {"tableSize": 4}}),
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "prime",
    ),
    (
        "maglev table size above Envoy's 5000011",
        hash_lb({"useSourceIp": True, "maglev": {"tableSize": 5000101}}),
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "5000011",
    ),
    (
        "ring hash minimum above Envoy's 8M",
        hash_lb({"useSourceIp": True, "ringHash": {"minimumRingSize": 2**32}}),
        "spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize",
        "8388608",
    ),
    (
        "hash header name with CR",
        hash_lb({"httpHeaderName": "x-user\r"}),
        "spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName",
        "CR, LF or NUL",
    ),
    (
        "duration in non-ASCII digits",
        tcp_pool({"connectTimeout": "\u0663s"}),
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "not a duration",
    ),
]


@pytest.mark.parametrize(
    ("raw", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_out_of_bounds_value_is_a_validation_error_naming_the_field(
    raw: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_object(raw)
    assert caught.value.field == field
    assert words in caught.value.message


def test_error_quoting_a_huge_value_is_clipped() -> None:
    raw = tcp_pool({"connectTimeout": "9" * 100_000 + "h"})
    with pytest.raises(ValidationError) as caught:
        parse_object(raw)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    "raw",
    [
        tcp_pool({"connectTimeout": "9223372035s"}),  # the longest duration Envoy accepts
        tcp_pool({"tcpKeepalive": {"time": "4294967295s", "interval": "1s", "probes": 9}}),
        vs({"route": [{**ROUTE, "weight": 2**31 - 1}, {**ROUTE, "weight": 2**31 - 1}]}),
        vs({"route": [ROUTE], "retries": {"attempts": 2**31 - 1}, "timeout": "0s"}),
        vs({"directResponse": {"status": 200, "body": {"string": "x" * 4096}}}),
        header_ops({"set": {"x-request-id_2": "a b"}, "add": {"X-A": ""}, "remove": ["x-b"]}),
        hash_lb({"useSourceIp": True, "maglev": {"tableSize": 5000011}}),
        hash_lb({"useSourceIp": True, "ringHash": {"minimumRingSize": 8388608}}),
        obj("WorkloadEntry", {"address": "10.0.0.1", "weight": 4294967295}),
    ],
    ids=[
        "max duration",
        "max keepalive",
        "weights summing to 2^32-2",
        "max attempts, zero timeout",
        "4 KB body",
        "ordinary header names",
        "max maglev prime",
        "max ring",
        "max endpoint weight",
    ],
)
def test_values_at_the_limits_are_accepted(raw: dict[str, Any]) -> None:
    parse_object(raw)
