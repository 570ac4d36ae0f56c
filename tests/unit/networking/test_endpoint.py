"""EDS: which endpoints a proxy is sent, on which port, grouped by locality with weights."""

from __future__ import annotations

from tests.support.objects import (
    context,
    endpoint,
    endpoint_slice,
    node,
    outbound_cluster,
    pod,
    service,
    service_port,
)
from tests.unit.networking.helpers import endpoint_addresses, load_assignments, sidecar

WEB = outbound_cluster("web", 80, "shop")


def test_only_ready_endpoints_are_sent() -> None:
    ctx = context(
        service("web", "shop", ports=[service_port("http", 80, target_port=8080)]),
        endpoint_slice(
            "web",
            "shop",
            ports=[("http", 8080)],
            endpoints=[
                endpoint("10.1.0.1"),
                endpoint("10.1.0.2", ready=False),
                {"addresses": ["10.1.0.3"]},  # no conditions: ready
                {"addresses": ["10.1.0.4"], "conditions": {"ready": False, "serving": True}},
            ],
        ),
    )
    cla = load_assignments(ctx, sidecar())[WEB]
    assert sorted(endpoint_addresses(cla)) == [("10.1.0.1", 8080), ("10.1.0.3", 8080)]


def test_service_without_endpoints_still_gets_an_empty_assignment() -> None:
    ctx = context(service("web", "shop"))
    found = load_assignments(ctx, sidecar())
    assert WEB in found
    assert found[WEB].cluster_name == WEB
    assert endpoint_addresses(found[WEB]) == []


def test_service_whose_endpoints_are_all_not_ready_gets_an_empty_assignment() -> None:
    ctx = context(
        service("web", "shop"),
        endpoint_slice("web", "shop", endpoints=[endpoint("10.1.0.1", ready=False)]),
    )
    assert endpoint_addresses(load_assignments(ctx, sidecar())[WEB]) == []


def test_endpoint_port_comes_from_the_slice_port_matched_by_name() -> None:
    ctx = context(
        service(
            "web",
            "shop",
            ports=[
                service_port("http", 80, target_port="web"),
                service_port("http-admin", 81, target_port=9901),
            ],
        ),
        # The slice lists ports in another order, with the container's real numbers.
        endpoint_slice(
            "web", "shop", ports=[("http-admin", 19901), ("http", 18080)], endpoints=["10.1.0.1"]
        ),
    )
    found = load_assignments(ctx, sidecar())
    assert endpoint_addresses(found[outbound_cluster("web", 80, "shop")]) == [("10.1.0.1", 18080)]
    assert endpoint_addresses(found[outbound_cluster("web", 81, "shop")]) == [("10.1.0.1", 19901)]


def test_slice_without_the_port_contributes_nothing_to_it() -> None:
    ctx = context(
        service("web", "shop"),
        endpoint_slice("web", "shop", ports=[("metrics", 9090)], endpoints=["10.1.0.1"]),
    )
    assert endpoint_addresses(load_assignments(ctx, sidecar())[WEB]) == []


def test_endpoints_of_several_slices_are_merged_without_duplicates() -> None:
    ctx = context(
        service("web", "shop"),
        endpoint_slice("web", "shop", name="web-a", endpoints=["10.1.0.1", "10.1.0.2"]),
        endpoint_slice("web", "shop", name="web-b", endpoints=["10.1.0.2", "10.1.0.3"]),
    )
    addresses = endpoint_addresses(load_assignments(ctx, sidecar())[WEB])
    assert sorted(addresses) == [("10.1.0.1", 80), ("10.1.0.2", 80), ("10.1.0.3", 80)]


def test_slice_of_a_same_named_service_in_another_namespace_is_not_mixed_in() -> None:
    ctx = context(
        service("web", "shop"),
        service("web", "billing"),
        endpoint_slice("web", "billing", endpoints=["10.2.0.1"]),
    )
    found = load_assignments(ctx, sidecar())
    assert endpoint_addresses(found[WEB]) == []
    assert endpoint_addresses(found[outbound_cluster("web", 80, "billing")]) == [("10.2.0.1", 80)]


def test_headless_external_name_and_udp_get_no_assignment() -> None:
    ctx = context(
        service("db", "shop", cluster_ip="None", ports=[service_port("tcp", 5432)]),
        service("search", "shop", type="ExternalName", external_name="s.example.com", selector={}),
        service("dns", "shop", ports=[service_port("dns", 53, protocol="UDP")]),
        endpoint_slice("db", "shop", ports=[("tcp", 5432)], endpoints=["10.1.0.7"]),
    )
    assert load_assignments(ctx, sidecar()) == {}


def test_locality_from_endpoint_zone_node_region_and_pod_subzone() -> None:
    ctx = context(
        node("node-a", region="eu-west-1", zone="eu-west-1c"),
        pod(
            "web-1",
            "shop",
            ip="10.1.0.1",
            node_name="node-a",
            labels={"app": "web", "topology.istio.io/subzone": "rack-7"},
        ),
        service("web", "shop"),
        endpoint_slice(
            "web",
            "shop",
            endpoints=[
                endpoint(
                    "10.1.0.1", zone="eu-west-1a", node_name="node-a", pod="web-1", namespace="shop"
                )
            ],
        ),
    )
    (group,) = load_assignments(ctx, sidecar())[WEB].endpoints
    # The slice's zone wins over the Node's zone label; region comes from the Node.
    assert (group.locality.region, group.locality.zone, group.locality.sub_zone) == (
        "eu-west-1",
        "eu-west-1a",
        "rack-7",
    )


def test_zone_falls_back_to_the_node_label() -> None:
    ctx = context(
        node("node-b", region="us-east-1", zone="us-east-1b"),
        service("web", "shop"),
        endpoint_slice("web", "shop", endpoints=[endpoint("10.1.0.1", node_name="node-b")]),
    )
    (group,) = load_assignments(ctx, sidecar())[WEB].endpoints
    assert (group.locality.region, group.locality.zone) == ("us-east-1", "us-east-1b")


def test_pod_node_is_used_when_the_endpoint_names_none() -> None:
    ctx = context(
        node("node-c", region="ap-south-1", zone="ap-south-1a"),
        pod("web-1", "shop", ip="10.1.0.1", node_name="node-c"),
        service("web", "shop"),
        endpoint_slice("web", "shop", endpoints=[endpoint("10.1.0.1", pod="web-1")]),
    )
    (group,) = load_assignments(ctx, sidecar())[WEB].endpoints
    assert (group.locality.region, group.locality.zone) == ("ap-south-1", "ap-south-1a")


def test_every_locality_is_weighted_by_its_endpoint_count() -> None:
    ctx = context(
        service("web", "shop"),
        endpoint_slice(
            "web",
            "shop",
            endpoints=[
                endpoint("10.1.0.1", zone="a"),
                endpoint("10.1.0.2", zone="a"),
                endpoint("10.1.0.3", zone="a"),
                endpoint("10.1.0.4", zone="b"),
                endpoint("10.1.0.5"),  # no locality at all: still a weighted group
            ],
        ),
    )
    groups = load_assignments(ctx, sidecar())[WEB].endpoints
    weights = {g.locality.zone: g.load_balancing_weight.value for g in groups}
    assert weights == {"a": 3, "b": 1, "": 1}
    for group in groups:
        assert group.HasField("load_balancing_weight")
        assert len(group.lb_endpoints) == group.load_balancing_weight.value


def test_fqdn_slices_are_ignored_like_istio() -> None:
    ctx = context(
        service("web", "shop"),
        endpoint_slice("web", "shop", name="web-ip", endpoints=["10.1.0.1"]),
        endpoint_slice(
            "web", "shop", name="web-fqdn", address_type="FQDN", endpoints=["web.example.com"]
        ),
    )
    assert endpoint_addresses(load_assignments(ctx, sidecar())[WEB]) == [("10.1.0.1", 80)]
