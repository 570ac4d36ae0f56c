"""CDS: the outbound clusters a sidecar gets for the mesh's services, named and typed as Istio."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from istiolite.networking.names import (
    BLACKHOLE_CLUSTER,
    INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER,
)
from tests.support.objects import context, outbound_cluster, service, service_port
from tests.unit.networking.helpers import Cluster, clusters, endpoint_addresses, sidecar

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def http_options(cluster: Cluster) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    if HTTP_OPTIONS not in cluster.typed_extension_protocol_options:
        return None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[HTTP_OPTIONS].Unpack(options)
    return options


def test_one_eds_cluster_per_service_port_named_as_istio() -> None:
    ctx = context(
        service(
            "web",
            "shop",
            cluster_ip="10.96.0.10",
            ports=[service_port("http", 80, target_port=8080), service_port("tcp-admin", 9000)],
        )
    )
    found = clusters(ctx, sidecar())
    assert "outbound|80||web.shop.svc.cluster.local" in found
    assert "outbound|9000||web.shop.svc.cluster.local" in found
    # The cluster is named by the service port, never by the target port.
    assert "outbound|8080||web.shop.svc.cluster.local" not in found
    cluster = found["outbound|80||web.shop.svc.cluster.local"]
    assert cluster.type == Cluster.EDS
    eds = cluster.eds_cluster_config
    assert eds.service_name == cluster.name
    assert eds.eds_config.WhichOneof("config_source_specifier") == "ads"
    assert eds.eds_config.resource_api_version == config_source_pb2.ApiVersion.V3


def test_passthrough_blackhole_and_inbound_passthrough_are_always_there() -> None:
    found = clusters(context(), sidecar())
    assert set(found) == {PASSTHROUGH_CLUSTER, BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER}
    assert found[PASSTHROUGH_CLUSTER].type == Cluster.ORIGINAL_DST
    assert found[INBOUND_PASSTHROUGH_CLUSTER].type == Cluster.ORIGINAL_DST
    bind = found[INBOUND_PASSTHROUGH_CLUSTER].upstream_bind_config.source_address
    assert bind.address == "127.0.0.6"


def test_headless_service_gets_original_dst() -> None:
    ctx = context(service("db", "shop", cluster_ip="None", ports=[service_port("tcp", 5432)]))
    cluster = clusters(ctx, sidecar())[outbound_cluster("db", 5432, "shop")]
    assert cluster.type == Cluster.ORIGINAL_DST
    assert cluster.lb_policy == Cluster.CLUSTER_PROVIDED
    assert not cluster.HasField("eds_cluster_config")


def test_external_name_service_resolves_the_external_name_by_dns() -> None:
    ctx = context(
        service(
            "search",
            "shop",
            type="ExternalName",
            external_name="search.example.com",
            selector={},
            ports=[service_port("https", 443)],
        )
    )
    cluster = clusters(ctx, sidecar())[outbound_cluster("search", 443, "shop")]
    assert cluster.type == Cluster.STRICT_DNS
    assert cluster.load_assignment.cluster_name == cluster.name
    assert endpoint_addresses(cluster.load_assignment) == [("search.example.com", 443)]


def test_http2_and_grpc_ports_speak_http2_upstream() -> None:
    ctx = context(
        service(
            "api",
            ports=[
                service_port("grpc", 9000),
                service_port("http2-api", 9001),
                service_port("web", 9002, app_protocol="kubernetes.io/h2c"),
                service_port("http", 80),
                service_port("tcp", 5000),
                service_port("grpc-web", 9003),
            ],
        )
    )
    found = clusters(ctx, sidecar())
    for port in (9000, 9001, 9002):
        options = http_options(found[outbound_cluster("api", port)])
        assert options is not None, port
        assert options.explicit_http_config.HasField("http2_protocol_options"), port
    for port in (80, 5000, 9003):
        options = http_options(found[outbound_cluster("api", port)])
        assert options is None or not options.explicit_http_config.HasField(
            "http2_protocol_options"
        ), port


def test_sniffed_port_keeps_the_downstream_protocol() -> None:
    ctx = context(service("web", ports=[service_port("", 8000)]))
    options = http_options(clusters(ctx, sidecar())[outbound_cluster("web", 8000)])
    assert options is not None
    assert options.HasField("use_downstream_protocol_config")


def test_udp_ports_get_no_cluster() -> None:
    ctx = context(
        service(
            "dns",
            "kube-system",
            ports=[
                service_port("dns", 53, protocol="UDP"),
                service_port("dns-tcp", 53, protocol="TCP"),
            ],
        )
    )
    outbound = [n for n in clusters(ctx, sidecar()) if n.startswith("outbound|")]
    # The TCP port 53 cluster is there; the UDP one would have the same name and must not be.
    assert outbound == [outbound_cluster("dns", 53, "kube-system")]


def test_only_udp_service_gets_no_cluster_at_all() -> None:
    ctx = context(service("syslog", ports=[service_port("syslog", 514, protocol="UDP")]))
    assert not [n for n in clusters(ctx, sidecar()) if n.startswith("outbound|")]


def test_clusters_for_every_namespace_are_sent_to_every_sidecar() -> None:
    ctx = context(service("web", "shop"), service("web", "billing"))
    found = clusters(ctx, sidecar("default"))
    assert outbound_cluster("web", 80, "shop") in found
    assert outbound_cluster("web", 80, "billing") in found


def test_circuit_breakers_are_lifted_as_istiod_does() -> None:
    ctx = context(service("web"))
    cluster = clusters(ctx, sidecar())[outbound_cluster("web", 80)]
    threshold = cluster.circuit_breakers.thresholds[0]
    assert threshold.max_connections.value == 4294967295
    assert threshold.max_requests.value == 4294967295
