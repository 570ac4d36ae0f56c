"""DestinationRule traffic policies → the exact Envoy cluster and route fields istiod writes."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format

from istiolite.model.destinationrule import parse_destination_rule
from istiolite.model.protocol import Protocol
from istiolite.networking.traffic_policy import (
    HashPolicy,
    apply_traffic_policy,
    hash_policy,
    route_hash_policies,
)
from tests.support.objects import context, hostname, service, service_port
from tests.unit.networking.helpers import clusters, sidecar

Cluster = cluster_pb2.Cluster
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MAX = 4294967295


def dr_raw(spec: dict[str, Any], host: str = "web", namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": host.replace("*.", "any-") + "-rule", "namespace": namespace},
        "spec": {"host": host, **spec},
    }


def policy(spec: dict[str, Any], subset: str = "", port: int = 80) -> Any:
    return parse_destination_rule(dr_raw({"trafficPolicy": spec})).policy_for(subset, port)


def applied(spec: dict[str, Any], protocol: Protocol = Protocol.HTTP) -> dict[str, Any]:
    cluster = Cluster(name="c", type=Cluster.EDS, lb_policy=Cluster.LEAST_REQUEST)
    apply_traffic_policy(cluster, policy(spec), protocol)
    return json_format.MessageToDict(cluster)


def http_options(cluster: Cluster) -> dict[str, Any]:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[HTTP_OPTIONS].Unpack(options)
    return json_format.MessageToDict(options)


def test_simple_load_balancers() -> None:
    def lb(simple: str) -> int:
        cluster = Cluster(name="c", type=Cluster.EDS, lb_policy=Cluster.LEAST_REQUEST)
        apply_traffic_policy(cluster, policy({"loadBalancer": {"simple": simple}}), Protocol.HTTP)
        return cluster.lb_policy

    assert lb("ROUND_ROBIN") == Cluster.ROUND_ROBIN
    assert lb("RANDOM") == Cluster.RANDOM
    assert lb("LEAST_REQUEST") == Cluster.LEAST_REQUEST
    assert lb("LEAST_CONN") == Cluster.LEAST_REQUEST
    assert lb("UNSPECIFIED") == Cluster.LEAST_REQUEST


def test_passthrough_turns_the_cluster_into_original_destination() -> None:
    cluster = Cluster(name="c", type=Cluster.EDS)
    cluster.eds_cluster_config.service_name = "c"
    apply_traffic_policy(
        cluster, policy({"loadBalancer": {"simple": "PASSTHROUGH"}}), Protocol.HTTP
    )
    assert cluster.type == Cluster.ORIGINAL_DST
    assert cluster.lb_policy == Cluster.CLUSTER_PROVIDED
    assert not cluster.HasField("eds_cluster_config")


def test_consistent_hash_cluster_config() -> None:
    header = {"httpHeaderName": "x-user"}
    ring = applied({"loadBalancer": {"consistentHash": header}})
    # The plain form: istiod writes Envoy's default ring size explicitly.
    assert ring["lbPolicy"] == "RING_HASH"
    assert ring["ringHashLbConfig"] == {"minimumRingSize": "1024"}
    sized = applied(
        {"loadBalancer": {"consistentHash": {**header, "ringHash": {"minimumRingSize": 64}}}}
    )
    assert sized["lbPolicy"] == "RING_HASH"
    assert sized["ringHashLbConfig"] == {"minimumRingSize": "64"}
    maglev = applied(
        {"loadBalancer": {"consistentHash": {**header, "maglev": {"tableSize": 65537}}}}
    )
    assert maglev["lbPolicy"] == "MAGLEV"
    assert maglev["maglevLbConfig"] == {"tableSize": "65537"}
    bare = applied({"loadBalancer": {"consistentHash": {**header, "maglev": {}}}})
    assert bare["lbPolicy"] == "MAGLEV" and "maglevLbConfig" not in bare


def test_connection_pool_to_circuit_breakers_and_protocol_options() -> None:
    result = applied(
        {
            "connectionPool": {
                "tcp": {"maxConnections": 1, "connectTimeout": "250ms"},
                "http": {
                    "http1MaxPendingRequests": 2,
                    "http2MaxRequests": 3,
                    "maxRetries": 4,
                    "maxRequestsPerConnection": 5,
                    "idleTimeout": "30s",
                },
            }
        }
    )
    assert result["connectTimeout"] == "0.250s"
    assert result["circuitBreakers"] == {
        "thresholds": [
            {
                "maxConnections": 1,
                "maxPendingRequests": 2,
                "maxRequests": 3,
                "maxRetries": 4,
                "trackRemaining": True,
            }
        ]
    }
    options = result["typedExtensionProtocolOptions"][HTTP_OPTIONS]
    assert options["commonHttpProtocolOptions"] == {
        "idleTimeout": "30s",
        "maxRequestsPerConnection": 5,
    }
    # Envoy needs an upstream protocol next to common options; istiod says HTTP/1.1.
    assert options["explicitHttpConfig"] == {"httpProtocolOptions": {}}


def test_unset_thresholds_get_istiods_defaults() -> None:
    result = applied({"connectionPool": {"http": {"http1MaxPendingRequests": 1}}})
    assert result["circuitBreakers"]["thresholds"] == [
        {
            "maxConnections": MAX,
            "maxPendingRequests": 1,
            "maxRequests": MAX,
            "maxRetries": MAX,
            "trackRemaining": True,
        }
    ]
    assert "typedExtensionProtocolOptions" not in result


def test_h2_upgrade_and_client_protocol() -> None:
    upgraded = applied({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}})
    options = upgraded["typedExtensionProtocolOptions"][HTTP_OPTIONS]
    assert options["explicitHttpConfig"] == {"http2ProtocolOptions": {}}
    # Not for TCP ports.
    tcp = applied({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}, Protocol.TCP)
    assert "typedExtensionProtocolOptions" not in tcp
    client = applied({"connectionPool": {"http": {"useClientProtocol": True}}})
    options = client["typedExtensionProtocolOptions"][HTTP_OPTIONS]
    assert set(options["useDownstreamProtocolConfig"]) == {
        "httpProtocolOptions",
        "http2ProtocolOptions",
    }


def test_tcp_keepalive_and_max_connection_duration() -> None:
    result = applied(
        {
            "connectionPool": {
                "tcp": {
                    "maxConnectionDuration": "1h",
                    "tcpKeepalive": {"probes": 3, "time": "7200s", "interval": "75s"},
                }
            }
        }
    )
    assert result["upstreamConnectionOptions"] == {
        "tcpKeepalive": {"keepaliveProbes": 3, "keepaliveTime": 7200, "keepaliveInterval": 75}
    }
    options = result["typedExtensionProtocolOptions"][HTTP_OPTIONS]
    assert options["commonHttpProtocolOptions"] == {"maxConnectionDuration": "3600s"}


def test_outlier_detection_as_istiod() -> None:
    result = applied(
        {
            "outlierDetection": {
                "consecutive5xxErrors": 1,
                "consecutiveGatewayErrors": 0,
                "interval": "1s",
                "baseEjectionTime": "3m",
                "maxEjectionPercent": 100,
                "minHealthPercent": 10,
            }
        }
    )
    assert result["outlierDetection"] == {
        "consecutive5xx": 1,
        "enforcingConsecutive5xx": 100,
        "consecutiveGatewayFailure": 0,
        "enforcingConsecutiveGatewayFailure": 0,
        "interval": "1s",
        "baseEjectionTime": "180s",
        "maxEjectionPercent": 100,
        "enforcingSuccessRate": 0,
    }
    assert result["commonLbConfig"] == {"healthyPanicThreshold": {"value": 10.0}}


def test_outlier_detection_disables_the_panic_threshold_by_default() -> None:
    result = applied({"outlierDetection": {"consecutive5xxErrors": 3}})
    cluster = json_format.ParseDict(result, Cluster())
    assert cluster.common_lb_config.HasField("healthy_panic_threshold")
    assert cluster.common_lb_config.healthy_panic_threshold.value == 0.0
    assert "interval" not in result["outlierDetection"]


def test_hash_policies() -> None:
    def hp(ch: dict[str, Any]) -> list[dict[str, Any]]:
        found = hash_policy(policy({"loadBalancer": {"consistentHash": ch}}))
        return [json_format.MessageToDict(p) for p in found]

    assert hp({"httpHeaderName": "x-user"}) == [{"header": {"headerName": "x-user"}}]
    assert hp({"useSourceIp": True}) == [{"connectionProperties": {"sourceIp": True}}]
    assert hp({"httpQueryParameterName": "u"}) == [{"queryParameter": {"name": "u"}}]
    assert hp({"httpCookie": {"name": "s", "path": "/p", "ttl": "10s"}}) == [
        {"cookie": {"name": "s", "path": "/p", "ttl": "10s"}}
    ]
    assert hash_policy(policy({"loadBalancer": {"simple": "RANDOM"}})) == []
    assert hash_policy(None) == []


WEB = service("web", ports=[service_port("http", 80), service_port("http-admin", 9000)])
SPEC: dict[str, Any] = {
    "trafficPolicy": {
        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-top"}},
        "connectionPool": {"tcp": {"maxConnections": 10}},
        "portLevelSettings": [
            {"port": {"number": 9000}, "loadBalancer": {"simple": "RANDOM"}},
        ],
    },
    "subsets": [
        {"name": "v1", "labels": {"version": "v1"}},
        {
            "name": "v2",
            "labels": {"version": "v2"},
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"useSourceIp": True}}},
        },
    ],
}


def test_route_hash_policies_follow_subset_and_port() -> None:
    ctx = context(WEB, dr_raw(SPEC))
    host = hostname("web")
    top = [HashPolicy(header=HashPolicy.Header(header_name="x-top"))]
    source = [HashPolicy(connection_properties=HashPolicy.ConnectionProperties(source_ip=True))]
    assert route_hash_policies(ctx, host, "", 80) == top
    assert route_hash_policies(ctx, host, "v1", 80) == top
    assert route_hash_policies(ctx, host, "v2", 80) == source
    assert route_hash_policies(ctx, host, "", 9000) == []
    assert route_hash_policies(ctx, hostname("other"), "", 80) == []


def test_outbound_and_subset_clusters_carry_their_merged_policy() -> None:
    found = clusters(context(WEB, dr_raw(SPEC)), sidecar())
    host = hostname("web")
    main = found[f"outbound|80||{host}"]
    assert main.lb_policy == Cluster.RING_HASH
    assert main.circuit_breakers.thresholds[0].max_connections.value == 10
    v2 = found[f"outbound|80|v2|{host}"]
    assert v2.lb_policy == Cluster.RING_HASH
    assert v2.circuit_breakers.thresholds[0].max_connections.value == 10  # inherited
    admin = found[f"outbound|9000|v1|{host}"]
    assert admin.lb_policy == Cluster.RANDOM
    # The port-level entry replaces the connection pool too: back to istiod's defaults.
    assert admin.circuit_breakers.thresholds[0].max_connections.value == MAX
    # EDS is kept (only PASSTHROUGH changes the discovery type).
    assert main.type == Cluster.EDS and main.eds_cluster_config.service_name == main.name


def test_wildcard_destination_rule_applies_to_matching_hosts() -> None:
    rule = dr_raw(
        {"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
        host="*.default.svc.cluster.local",
    )
    found = clusters(context(WEB, rule), sidecar())
    assert found[f"outbound|80||{hostname('web')}"].lb_policy == Cluster.ROUND_ROBIN


def test_headless_service_keeps_original_destination() -> None:
    headless = service("db", cluster_ip="None", ports=[service_port("tcp", 5432)])
    rule = dr_raw({"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}, host="db")
    cluster = clusters(context(headless, rule), sidecar())[f"outbound|5432||{hostname('db')}"]
    assert cluster.type == Cluster.ORIGINAL_DST
    assert cluster.lb_policy == Cluster.CLUSTER_PROVIDED


def test_protocol_options_of_http2_ports_are_kept() -> None:
    grpc = service("api", ports=[service_port("grpc", 7070)])
    rule = dr_raw({"trafficPolicy": {"connectionPool": {"http": {"idleTimeout": "5s"}}}}, "api")
    cluster = clusters(context(grpc, rule), sidecar())[f"outbound|7070||{hostname('api')}"]
    options = http_options(cluster)
    assert options["explicitHttpConfig"] == {"http2ProtocolOptions": {}}
    assert options["commonHttpProtocolOptions"] == {"idleTimeout": "5s"}
