"""LDS for sidecars: where outbound traffic is caught and which filter handles it."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2

from istiolite.push.context import PushContext
from tests.support.objects import context, endpoint_slice, outbound_cluster, service, service_port
from tests.unit.networking.helpers import (
    Listener,
    all_chains,
    http_manager,
    listeners,
    router,
    sidecar,
    tcp_proxy,
)

INSPECTOR = "envoy.filters.listener.http_inspector"


def mesh() -> PushContext:
    return context(
        service("web", "shop", cluster_ip="10.96.0.10", ports=[service_port("http", 80)]),
        service("db", "shop", cluster_ip="10.96.0.20", ports=[service_port("tcp-pg", 5432)]),
        service("cache", "shop", cluster_ip="10.96.0.30", ports=[service_port("redis", 6379)]),
        service(
            "dns", "shop", cluster_ip="10.96.0.53", ports=[service_port("dns", 53, protocol="UDP")]
        ),
    )


def only_http_route(listener: Listener) -> str:
    (chain,) = listener.filter_chains
    manager = http_manager(chain)
    assert manager is not None
    assert manager.http_filters[-1].name == "envoy.filters.http.router"
    return manager.rds.route_config_name


def only_tcp_cluster(listener: Listener) -> str:
    (chain,) = all_chains(listener)
    proxy = tcp_proxy(chain)
    assert proxy is not None
    return proxy.cluster


def test_redirect_mode_listener_names() -> None:
    found = listeners(mesh(), sidecar("shop"))
    assert set(found) == {
        "0.0.0.0_80",
        "10.96.0.20_5432",
        "10.96.0.30_6379",
        "virtualOutbound",
        "virtualInbound",
    }


def test_redirect_mode_http_port_listener_is_not_bound_and_uses_the_port_route() -> None:
    listener = listeners(mesh(), sidecar("shop"))["0.0.0.0_80"]
    assert listener.HasField("bind_to_port") and listener.bind_to_port.value is False
    assert listener.address.socket_address.address == "0.0.0.0"
    assert listener.address.socket_address.port_value == 80
    assert listener.traffic_direction == base_pb2.OUTBOUND
    assert only_http_route(listener) == "80"


def test_redirect_mode_tcp_port_listens_on_the_cluster_ip() -> None:
    listener = listeners(mesh(), sidecar("shop"))["10.96.0.20_5432"]
    assert listener.bind_to_port.value is False and listener.HasField("bind_to_port")
    assert listener.address.socket_address.address == "10.96.0.20"
    assert only_tcp_cluster(listener) == outbound_cluster("db", 5432, "shop")


def test_virtual_outbound_hands_connections_to_the_original_destination() -> None:
    found = listeners(mesh(), sidecar("shop"))
    outbound = found["virtualOutbound"]
    assert outbound.address.socket_address.port_value == 15001
    assert outbound.use_original_dst.value is True
    # Unknown destinations pass through; nothing binds a port other than the virtual listeners.
    clusters = {tcp_proxy(c).cluster for c in all_chains(outbound) if tcp_proxy(c)}
    assert "PassthroughCluster" in clusters
    bound = [n for n, lis in found.items() if not lis.HasField("bind_to_port")]
    assert sorted(bound) == ["virtualInbound", "virtualOutbound"]


def test_virtual_inbound_on_15006() -> None:
    inbound = listeners(mesh(), sidecar("shop"))["virtualInbound"]
    assert inbound.address.socket_address.port_value == 15006
    assert inbound.traffic_direction == base_pb2.INBOUND
    assert "envoy.filters.listener.original_dst" in [f.name for f in inbound.listener_filters]
    assert tcp_proxy(inbound.default_filter_chain).cluster == "InboundPassthroughCluster"


def test_no_capture_mode_binds_loopback_ports_and_has_no_virtual_listeners() -> None:
    found = listeners(mesh(), sidecar("shop", mode="NONE"))
    assert set(found) == {"127.0.0.1_80", "127.0.0.1_5432", "127.0.0.1_6379"}
    for listener in found.values():
        assert listener.address.socket_address.address == "127.0.0.1"
        assert not listener.HasField("bind_to_port") or listener.bind_to_port.value
    assert only_http_route(found["127.0.0.1_80"]) == "80"
    assert only_tcp_cluster(found["127.0.0.1_5432"]) == outbound_cluster("db", 5432, "shop")


def test_no_capture_mode_skips_headless_services() -> None:
    ctx = context(
        service("db", "shop", cluster_ip="None", ports=[service_port("tcp", 5432)]),
        endpoint_slice("db", "shop", ports=[("tcp", 5432)], endpoints=["10.1.0.7"]),
    )
    assert listeners(ctx, sidecar("shop", mode="NONE")) == {}


def test_redirect_mode_headless_tcp_service_gets_a_listener_per_endpoint() -> None:
    ctx = context(
        service("db", "shop", cluster_ip="None", ports=[service_port("tcp", 5432)]),
        endpoint_slice("db", "shop", ports=[("tcp", 5432)], endpoints=["10.1.0.7", "10.1.0.8"]),
    )
    found = listeners(ctx, sidecar("shop"))
    assert {"10.1.0.7_5432", "10.1.0.8_5432"} <= set(found)
    assert only_tcp_cluster(found["10.1.0.7_5432"]) == outbound_cluster("db", 5432, "shop")


def test_unnamed_port_sniffs_http_and_falls_back_to_tcp() -> None:
    ctx = context(service("web", "shop", cluster_ip="10.96.0.10", ports=[service_port("", 8000)]))
    for proxy, name in (
        (sidecar("shop"), "10.96.0.10_8000"),
        (sidecar("shop", mode="NONE"), "127.0.0.1_8000"),
    ):
        listener = listeners(ctx, proxy)[name]
        assert INSPECTOR in [f.name for f in listener.listener_filters]
        chains = all_chains(listener)
        http = [c for c in chains if http_manager(c) is not None]
        tcp = [c for c in chains if tcp_proxy(c) is not None]
        assert len(http) == 1 and len(tcp) == 1
        assert http_manager(http[0]).rds.route_config_name == "8000"
        assert list(http[0].filter_chain_match.application_protocols)
        assert tcp_proxy(tcp[0]).cluster == outbound_cluster("web", 8000, "shop")


def test_named_ports_are_not_sniffed() -> None:
    found = listeners(mesh(), sidecar("shop"))
    for name in ("0.0.0.0_80", "10.96.0.20_5432"):
        assert INSPECTOR not in [f.name for f in found[name].listener_filters]


def test_a_cluster_ip_port_shared_by_two_services_goes_to_the_first_by_hostname() -> None:
    ctx = context(
        service("db2", "shop", cluster_ip="10.96.0.20", ports=[service_port("tcp", 5432)]),
        service("db", "shop", cluster_ip="10.96.0.20", ports=[service_port("tcp", 5432)]),
    )
    listener = listeners(ctx, sidecar("shop"))["10.96.0.20_5432"]
    assert only_tcp_cluster(listener) == outbound_cluster("db", 5432, "shop")


def test_router_proxies_get_no_sidecar_listeners() -> None:
    assert listeners(mesh(), router()) == {}
