"""The inbound side of a sidecar: clusters and virtualInbound chains for the ports it serves."""

from __future__ import annotations

from tests.support.objects import context, pod, service, service_port
from tests.unit.networking.helpers import (
    Cluster,
    FilterChain,
    all_chains,
    clusters,
    endpoint_addresses,
    http_manager,
    listeners,
    router,
    sidecar,
    tcp_proxy,
)


def inbound_names(found: dict[str, Cluster]) -> list[str]:
    return sorted(n for n in found if n.startswith("inbound|"))


def test_selected_sidecar_gets_an_inbound_cluster_per_target_port() -> None:
    ctx = context(
        service(
            "web",
            "shop",
            selector={"app": "web"},
            ports=[
                service_port("http", 80, target_port=8080),
                service_port("tcp-admin", 9000, target_port=9001),
            ],
        )
    )
    found = clusters(ctx, sidecar("shop", "web-1", labels={"app": "web", "version": "v1"}))
    assert inbound_names(found) == ["inbound|8080||", "inbound|9001||"]
    cluster = found["inbound|8080||"]
    assert cluster.type == Cluster.STATIC
    assert endpoint_addresses(cluster.load_assignment) == [("127.0.0.1", 8080)]


def test_virtual_inbound_has_a_chain_per_inbound_port() -> None:
    ctx = context(
        service(
            "web",
            "shop",
            ports=[
                service_port("http", 80, target_port=8080),
                service_port("tcp-admin", 9000, target_port=9001),
            ],
        )
    )
    inbound = listeners(ctx, sidecar("shop", "web-1", labels={"app": "web"}))["virtualInbound"]
    by_port: dict[int, list[FilterChain]] = {}
    for chain in all_chains(inbound):
        port = chain.filter_chain_match.destination_port.value
        by_port.setdefault(port, []).append(chain)
    (http_chain,) = by_port[8080]
    manager = http_manager(http_chain)
    assert manager is not None
    routes = manager.route_config.virtual_hosts[0].routes
    assert routes[0].route.cluster == "inbound|8080||"
    (tcp_chain,) = by_port[9001]
    assert tcp_proxy(tcp_chain).cluster == "inbound|9001||"


def test_named_target_port_is_resolved_through_the_pod() -> None:
    ctx = context(
        pod(
            "web-1",
            "shop",
            ip="10.1.0.1",
            labels={"app": "web"},
            container_ports=[("metrics", 9090), ("http-web", 8081)],
        ),
        service("web", "shop", ports=[service_port("http", 80, target_port="http-web")]),
    )
    found = clusters(ctx, sidecar("shop", "web-1", labels={"app": "web"}))
    assert inbound_names(found) == ["inbound|8081||"]
    assert endpoint_addresses(found["inbound|8081||"].load_assignment) == [("127.0.0.1", 8081)]


def test_named_target_port_without_a_known_pod_is_skipped() -> None:
    ctx = context(service("web", "shop", ports=[service_port("http", 80, target_port="http-web")]))
    found = clusters(ctx, sidecar("shop", "web-1", labels={"app": "web"}))
    assert inbound_names(found) == []


def test_labels_come_from_the_pod_when_the_node_has_none() -> None:
    ctx = context(
        pod("web-1", "shop", ip="10.1.0.1", labels={"app": "web"}),
        service("web", "shop", ports=[service_port("http", 80, target_port=8080)]),
    )
    assert inbound_names(clusters(ctx, sidecar("shop", "web-1"))) == ["inbound|8080||"]


def test_proxy_in_another_namespace_gets_no_inbound_clusters() -> None:
    ctx = context(service("web", "shop", ports=[service_port("http", 80, target_port=8080)]))
    found = clusters(ctx, sidecar("billing", "web-1", labels={"app": "web"}))
    assert inbound_names(found) == []


def test_selector_must_match_all_its_labels() -> None:
    ctx = context(
        service("web-v2", "shop", selector={"app": "web", "version": "v2"}),
        service("all", "shop", selector={}, ports=[service_port("http", 81)]),
    )
    found = clusters(ctx, sidecar("shop", "web-1", labels={"app": "web", "version": "v1"}))
    assert inbound_names(found) == []


def test_two_services_on_one_target_port_give_one_cluster() -> None:
    ctx = context(
        service("web", "shop", ports=[service_port("http", 80, target_port=8080)]),
        service("web-canary", "shop", selector={"app": "web"}, ports=[service_port("http", 8080)]),
    )
    found = clusters(ctx, sidecar("shop", "web-1", labels={"app": "web"}))
    assert inbound_names(found) == ["inbound|8080||"]


def test_udp_ports_get_no_inbound_cluster() -> None:
    ctx = context(
        service(
            "dns", "shop", selector={"app": "dns"}, ports=[service_port("dns", 53, protocol="UDP")]
        )
    )
    assert inbound_names(clusters(ctx, sidecar("shop", "dns-1", labels={"app": "dns"}))) == []


def test_router_gets_outbound_clusters_but_no_inbound_ones() -> None:
    ctx = context(
        service(
            "ingress",
            "istio-system",
            selector={"istio": "ingressgateway"},
            ports=[service_port("http", 80, target_port=8080)],
        ),
        service("web", "shop"),
    )
    found = clusters(ctx, router())
    assert "outbound|80||web.shop.svc.cluster.local" in found
    assert "outbound|80||ingress.istio-system.svc.cluster.local" in found
    assert inbound_names(found) == []
