"""generate(): per-proxy results, with work shared by identical proxies and rebuilt per push."""

from __future__ import annotations

import pytest

from istiolite import type_urls
from istiolite.networking import generator
from tests.support.objects import (
    context,
    endpoint_slice,
    outbound_cluster,
    pod,
    service,
    service_port,
)
from tests.unit.networking.helpers import clusters, listeners, router, routes, sidecar

WEB = outbound_cluster("web", 80, "shop")
ALL_TYPES = (type_urls.CLUSTER, type_urls.ENDPOINT, type_urls.LISTENER, type_urls.ROUTE)


def mesh_objects() -> list[dict[str, object]]:
    return [
        service("web", "shop", cluster_ip="10.96.0.10", ports=[service_port("http", 80)]),
        service("db", "shop", cluster_ip="10.96.0.20", ports=[service_port("tcp", 5432)]),
        endpoint_slice("web", "shop", endpoints=["10.1.0.1", "10.1.0.2"]),
        pod("web-1", "shop", ip="10.1.0.1", labels={"app": "web"}),
    ]


def test_resources_are_sorted_by_name_and_versioned_by_content() -> None:
    ctx = context(*mesh_objects())
    for type_url in ALL_TYPES:
        found = generator.generate(ctx, sidecar("shop"), type_url)
        assert list(found) == sorted(found)
        for resource in found.values():
            assert resource.version and resource.payload


def test_same_config_gives_same_versions_in_a_new_push() -> None:
    first = generator.generate(context(*mesh_objects()), sidecar("shop"), type_urls.CLUSTER)
    second = generator.generate(context(*mesh_objects()), sidecar("shop"), type_urls.CLUSTER)
    assert {n: r.version for n, r in first.items()} == {n: r.version for n, r in second.items()}


def test_changed_service_changes_only_its_cluster_version() -> None:
    before = generator.generate(context(*mesh_objects()), sidecar("shop"), type_urls.CLUSTER)
    changed = mesh_objects()
    changed[1] = service("db", "shop", cluster_ip="10.96.0.20", ports=[service_port("grpc", 5432)])
    after = generator.generate(context(*changed), sidecar("shop"), type_urls.CLUSTER)
    differs = {n for n in before if before[n].version != after[n].version}
    assert differs == {outbound_cluster("db", 5432, "shop")}


def test_unknown_type_generates_nothing() -> None:
    ctx = context(*mesh_objects())
    assert generator.generate(ctx, sidecar("shop"), type_urls.SECRET) == {}
    assert generator.generate(ctx, sidecar("shop"), type_urls.NAME_TABLE) == {}


@pytest.mark.parametrize("type_url", ALL_TYPES)
def test_two_proxies_of_the_same_shape_share_resource_objects(type_url: str) -> None:
    ctx = context(*mesh_objects())
    a = generator.generate(ctx, sidecar("shop", "client-a", ip="10.1.0.50"), type_url)
    b = generator.generate(ctx, sidecar("shop", "client-b", ip="10.1.0.51"), type_url)
    assert a and set(a) == set(b)
    for name in a:
        assert a[name] is b[name], name


@pytest.mark.parametrize("type_url", [type_urls.CLUSTER, type_urls.ENDPOINT])
def test_outbound_work_is_shared_across_namespaces_and_inbound_shapes(type_url: str) -> None:
    ctx = context(*mesh_objects())
    client = generator.generate(ctx, sidecar("billing", "client"), type_url)
    server = generator.generate(ctx, sidecar("shop", "web-1", labels={"app": "web"}), type_url)
    assert WEB in client
    assert client[WEB] is server[WEB]


def test_a_new_push_context_rebuilds() -> None:
    objects = mesh_objects()
    first_ctx, second_ctx = context(*objects), context(*objects)
    for type_url in (type_urls.CLUSTER, type_urls.ENDPOINT):
        first = generator.generate(first_ctx, sidecar("shop"), type_url)[WEB]
        second = generator.generate(second_ctx, sidecar("shop"), type_url)[WEB]
        assert first is not second
        assert first.payload == second.payload


def test_a_new_push_context_sees_new_endpoints() -> None:
    objects = mesh_objects()
    ctx = context(*objects)
    before = generator.generate(ctx, sidecar("shop"), type_urls.ENDPOINT)[WEB]
    objects[2] = endpoint_slice("web", "shop", endpoints=["10.1.0.1", "10.1.0.2", "10.1.0.3"])
    after = generator.generate(context(*objects), sidecar("shop"), type_urls.ENDPOINT)[WEB]
    assert after.version != before.version


def test_cached_routes_are_not_shared_across_namespaces() -> None:
    ctx = context(*mesh_objects())
    local = routes(ctx, sidecar("shop"))["80"]
    remote = routes(ctx, sidecar("billing"))["80"]
    assert any("web" in vh.domains for vh in local.virtual_hosts)
    assert not any("web" in vh.domains for vh in remote.virtual_hosts)


def test_cached_results_are_not_shared_across_interception_modes() -> None:
    ctx = context(*mesh_objects())
    assert "virtualOutbound" in listeners(ctx, sidecar("shop"))
    assert "virtualOutbound" not in listeners(ctx, sidecar("shop", mode="NONE"))
    assert "virtualOutbound" in listeners(ctx, sidecar("shop", "other"))
    assert routes(ctx, sidecar("shop", mode="NONE"))["80"].virtual_hosts[-1].name == "block_all"
    assert routes(ctx, sidecar("shop"))["80"].virtual_hosts[-1].name == "allow_any"


def test_cached_inbound_clusters_are_per_workload_shape() -> None:
    ctx = context(*mesh_objects())
    server = clusters(ctx, sidecar("shop", "web-1", labels={"app": "web"}))
    client = clusters(ctx, sidecar("shop", "client"))
    again = clusters(ctx, sidecar("shop", "web-2", labels={"app": "web"}))
    assert "inbound|80||" in server and "inbound|80||" in again
    assert "inbound|80||" not in client


def test_router_shares_outbound_clusters_but_gets_no_listeners_or_routes() -> None:
    ctx = context(*mesh_objects())
    gw = generator.generate(ctx, router(), type_urls.CLUSTER)
    sc = generator.generate(ctx, sidecar("shop"), type_urls.CLUSTER)
    assert WEB in gw
    assert gw[WEB].payload == sc[WEB].payload
    assert generator.generate(ctx, router(), type_urls.LISTENER) == {}
    assert generator.generate(ctx, router(), type_urls.ROUTE) == {}
    assert WEB in generator.generate(ctx, router(), type_urls.ENDPOINT)
