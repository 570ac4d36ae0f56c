"""RDS: one route configuration per HTTP port; each name a client may use reaches one cluster."""

from __future__ import annotations

from collections import Counter

from envoy.config.route.v3 import route_components_pb2 as rc

from tests.support.objects import context, outbound_cluster, service, service_port
from tests.unit.networking.helpers import RouteConfiguration, router, routes, sidecar


def vhost_for(config: RouteConfiguration, domain: str) -> rc.VirtualHost:
    matches = [vh for vh in config.virtual_hosts if domain in vh.domains]
    assert len(matches) == 1, f"{domain} is in {len(matches)} virtual hosts"
    return matches[0]


def target(vh: rc.VirtualHost) -> str:
    return vh.routes[0].route.cluster


def test_one_route_config_per_http_port_named_by_the_port() -> None:
    ctx = context(
        service("web", "shop", cluster_ip="10.96.0.10", ports=[service_port("http", 80)]),
        service(
            "api",
            "shop",
            cluster_ip="10.96.0.11",
            ports=[
                service_port("http", 80),
                service_port("grpc", 9000),
                service_port("tcp-db", 5432),
                service_port("dns", 53, protocol="UDP"),
            ],
        ),
    )
    found = routes(ctx, sidecar("shop"))
    assert set(found) == {"80", "9000"}
    assert found["80"].name == "80"
    # Both services on port 80 share the configuration, a virtual host each (plus the fallback).
    assert target(vhost_for(found["80"], "web.shop.svc.cluster.local")) == outbound_cluster(
        "web", 80, "shop"
    )
    assert target(vhost_for(found["80"], "api.shop.svc.cluster.local")) == outbound_cluster(
        "api", 80, "shop"
    )


def test_sniffed_ports_get_a_route_config_too() -> None:
    ctx = context(service("web", "shop", cluster_ip="10.96.0.10", ports=[service_port("", 8000)]))
    assert set(routes(ctx, sidecar("shop"))) == {"8000"}


def test_domains_of_a_service_in_the_proxy_namespace() -> None:
    ctx = context(
        service("web", "shop", cluster_ip="10.96.0.10", ports=[service_port("http", 8080)])
    )
    vh = vhost_for(routes(ctx, sidecar("shop"))["8080"], "web.shop.svc.cluster.local")
    assert set(vh.domains) == {
        "web.shop.svc.cluster.local",
        "web.shop.svc.cluster.local:8080",
        "web",
        "web:8080",
        "web.shop",
        "web.shop:8080",
        "web.shop.svc",
        "web.shop.svc:8080",
        "10.96.0.10",
        "10.96.0.10:8080",
    }
    assert vh.name == "web.shop.svc.cluster.local:8080"


def test_short_name_only_from_the_same_namespace() -> None:
    ctx = context(
        service("web", "shop", cluster_ip="10.96.0.10", ports=[service_port("http", 8080)])
    )
    vh = vhost_for(routes(ctx, sidecar("billing"))["8080"], "web.shop.svc.cluster.local")
    assert "web" not in vh.domains
    assert "web:8080" not in vh.domains
    assert "web.shop" in vh.domains
    assert "10.96.0.10:8080" in vh.domains


def test_same_short_name_in_two_namespaces_goes_to_the_local_one() -> None:
    ctx = context(
        service("web", "shop", cluster_ip="10.96.0.10"),
        service("web", "billing", cluster_ip="10.96.0.20"),
    )
    for ns in ("shop", "billing"):
        config = routes(ctx, sidecar(ns))["80"]
        assert target(vhost_for(config, "web")) == outbound_cluster("web", 80, ns)
        assert target(vhost_for(config, "web:80")) == outbound_cluster("web", 80, ns)


def test_headless_service_has_no_ip_domain() -> None:
    ctx = context(service("db", "shop", cluster_ip="None", ports=[service_port("http", 8080)]))
    vh = vhost_for(routes(ctx, sidecar("shop"))["8080"], "db.shop.svc.cluster.local")
    assert "None" not in vh.domains and "None:8080" not in vh.domains


def test_no_domain_appears_twice_even_when_services_share_a_cluster_ip() -> None:
    ctx = context(
        service("web", "shop", cluster_ip="10.96.0.10"),
        service("web-alias", "shop", cluster_ip="10.96.0.10"),
        service("web", "billing", cluster_ip="10.96.0.30"),
    )
    config = routes(ctx, sidecar("shop"))["80"]
    counts = Counter(d for vh in config.virtual_hosts for d in vh.domains)
    assert [d for d, n in counts.items() if n > 1] == []
    # Each service is still reachable by its own names.
    assert target(vhost_for(config, "web-alias.shop.svc.cluster.local")) == outbound_cluster(
        "web-alias", 80, "shop"
    )
    assert target(vhost_for(config, "web.billing")) == outbound_cluster("web", 80, "billing")
    # The contested IP goes to exactly one of the two.
    assert target(vhost_for(config, "10.96.0.10:80")) in {
        outbound_cluster("web", 80, "shop"),
        outbound_cluster("web-alias", 80, "shop"),
    }
    for vh in config.virtual_hosts:
        assert vh.domains, vh.name


def test_fallback_for_unknown_hosts_is_passthrough_with_interception() -> None:
    ctx = context(service("web", "shop"))
    config = routes(ctx, sidecar("shop"))["80"]
    fallback = vhost_for(config, "*")
    assert fallback.name == "allow_any"
    assert target(fallback) == "PassthroughCluster"
    assert config.virtual_hosts[-1].name == "allow_any"


def test_fallback_without_interception_refuses_with_502() -> None:
    ctx = context(service("web", "shop"))
    fallback = vhost_for(routes(ctx, sidecar("shop", mode="NONE"))["80"], "*")
    assert fallback.name == "block_all"
    assert fallback.routes[0].direct_response.status == 502
    assert not fallback.routes[0].HasField("route")


def test_without_interception_headless_services_get_no_virtual_host() -> None:
    ctx = context(
        service("web", "shop", cluster_ip="10.96.0.10"),
        service("db", "shop", cluster_ip="None", ports=[service_port("http", 80)]),
    )
    config = routes(ctx, sidecar("shop", mode="NONE"))["80"]
    assert not [vh for vh in config.virtual_hosts if "db.shop.svc.cluster.local" in vh.domains]
    with_capture = routes(ctx, sidecar("shop"))["80"]
    assert vhost_for(with_capture, "db.shop.svc.cluster.local")


def test_routes_turn_off_the_default_timeout_and_retry_on_connect_failure() -> None:
    ctx = context(service("web", "shop"))
    action = vhost_for(routes(ctx, sidecar("shop"))["80"], "web").routes[0].route
    assert action.timeout.seconds == 0 and action.timeout.nanos == 0
    assert "connect-failure" in action.retry_policy.retry_on
    assert action.retry_policy.num_retries.value == 2


def test_router_proxies_get_no_sidecar_routes() -> None:
    ctx = context(service("web", "shop"))
    assert routes(ctx, router()) == {}


def test_retry_backoff_is_the_base_interval_and_codes_are_retriable() -> None:
    from istiolite.model.virtualservice import Retries
    from istiolite.networking.http_route import retry_policy

    policy = retry_policy(Retries(attempts=3, retry_on="connect-failure,503", backoff=0.1))
    assert policy is not None
    assert policy.num_retries.value == 3
    assert policy.retry_back_off.base_interval.ToMilliseconds() == 100
    assert list(policy.retriable_status_codes) == [503]
    assert policy.retry_on == "connect-failure,retriable-status-codes"
    # No backoff (or zero, which Envoy refuses): Envoy's default interval.
    unset = retry_policy(Retries(attempts=3, backoff=0.0))
    assert unset is not None and not unset.HasField("retry_back_off")
