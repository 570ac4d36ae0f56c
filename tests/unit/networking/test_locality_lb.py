"""DestinationRule localityLbSetting, as istiod applies it: parsing and validation, priorities
(failover, failoverPriority) and weights (distribute) relative to each proxy's locality, the
cluster's locality_weighted_lb_config, and the per-locality EDS cache (carry_over included)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from istiolite import type_urls
from istiolite.bootstrap import build_bootstrap
from istiolite.model.destinationrule import (
    LocalityDistribute,
    LocalityFailover,
    LocalityLbSetting,
    parse_destination_rule,
)
from istiolite.model.proxy import Proxy, parse_proxy
from istiolite.model.validation import ValidationError
from istiolite.networking import generator
from istiolite.networking.endpoint import locality_matches, proxy_locality
from istiolite.push.context import Locality, PushContext
from istiolite.push.dependencies import changed_deps
from istiolite.xds.protocol import SotwStream
from tests.support.objects import (
    Raw,
    context,
    endpoint,
    endpoint_slice,
    node,
    outbound_cluster,
    parse,
    pod,
    service,
)
from tests.unit.networking.helpers import ClusterLoadAssignment, clusters, load_assignments

NS = "shop"
WEB = outbound_cluster("web", 80, NS)
API = outbound_cluster("api", 80, NS)
OUTLIER: dict[str, Any] = {"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "30s"}

# r1/z1/s1 is where most test proxies run.
NODES = [
    node("n-r1-z1", region="r1", zone="z1"),
    node("n-r1-z2", region="r1", zone="z2"),
    node("n-r2-z3", region="r2", zone="z3"),
    node("n-r3-z4", region="r3", zone="z4"),
]


def destination_rule(host: str, traffic_policy: dict[str, Any] | None = None, **spec: Any) -> Raw:
    body: dict[str, Any] = {"host": host, **spec}
    if traffic_policy is not None:
        body["trafficPolicy"] = traffic_policy
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": host.split(".")[0], "namespace": NS},
        "spec": body,
    }


def backend_pod(name: str, ip: str, node_name: str, **labels: str) -> Raw:
    return pod(name, NS, ip=ip, node_name=node_name, labels={"app": "web", **labels})


# web: one pod per locality closeness from r1/z1/s1, plus the other regions.
WEB_PODS = [
    backend_pod("same", "10.0.0.1", "n-r1-z1", **{"topology.istio.io/subzone": "s1"}),
    backend_pod("subzone", "10.0.0.2", "n-r1-z1", **{"topology.istio.io/subzone": "s2"}),
    backend_pod("zone", "10.0.0.3", "n-r1-z2"),
    backend_pod("r2", "10.0.0.4", "n-r2-z3"),
    backend_pod("r3", "10.0.0.5", "n-r3-z4"),
]


def web(*extra: Raw, pods: list[Raw] = WEB_PODS) -> list[Raw]:
    """Nodes, the web pods, their Service and EndpointSlice (the api service too, no rule)."""
    eps = [endpoint(p["status"]["podIP"], pod=p["metadata"]["name"], namespace=NS) for p in pods]
    return [
        *NODES,
        *pods,
        service("web", NS),
        endpoint_slice("web", NS, endpoints=eps),
        service("api", NS),
        endpoint_slice("api", NS, name="api-slice", endpoints=["10.9.0.1"]),
        *extra,
    ]


def proxy(
    pod_name: str = "client",
    *,
    labels: dict[str, str] | None = None,
    locality: str = "",
) -> Proxy:
    metadata: dict[str, Any] = {"LABELS": labels} if labels is not None else {}
    p = parse_proxy(f"sidecar~10.1.0.9~{pod_name}.{NS}~{NS}.svc.cluster.local", metadata)
    return dataclasses.replace(p, locality=locality)


def client_pod(name: str, node_name: str, **labels: str) -> Raw:
    return pod(name, NS, ip="10.1.0.9", node_name=node_name, labels={"app": "client", **labels})


def priorities(cla: ClusterLoadAssignment) -> dict[str, int]:
    """address -> priority of its locality group."""
    return {
        lb.endpoint.address.socket_address.address: group.priority
        for group in cla.endpoints
        for lb in group.lb_endpoints
    }


def weights(cla: ClusterLoadAssignment) -> dict[tuple[str, str], tuple[int, int]]:
    """(region, zone) -> (locality weight, endpoints kept)."""
    return {
        (g.locality.region, g.locality.zone): (g.load_balancing_weight.value, len(g.lb_endpoints))
        for g in cla.endpoints
    }


CLIENT_R1_Z1_S1 = client_pod("client", "n-r1-z1", **{"topology.istio.io/subzone": "s1"})


# --- the default (mesh localityLbSetting enabled) with outlier detection --------------------------


def test_outlier_detection_alone_orders_endpoints_by_closeness_to_the_proxy() -> None:
    ctx = context(*web(CLIENT_R1_Z1_S1, destination_rule("web", {"outlierDetection": OUTLIER})))
    cla = load_assignments(ctx, proxy())[WEB]
    assert priorities(cla) == {
        "10.0.0.1": 0,  # same region, zone and subzone
        "10.0.0.2": 1,  # same zone
        "10.0.0.3": 2,  # same region
        "10.0.0.4": 3,  # elsewhere
        "10.0.0.5": 3,
    }
    # The cluster gets outlier detection but no locality weighting (no failover list), as istiod.
    found = clusters(ctx, proxy())[WEB]
    assert found.HasField("outlier_detection")
    assert not found.common_lb_config.HasField("locality_weighted_lb_config")


def test_priorities_are_relative_to_each_proxy_and_have_no_gaps() -> None:
    ctx = context(
        *web(
            client_pod("in-r2", "n-r2-z3"),
            destination_rule("web", {"outlierDetection": OUTLIER}),
        )
    )
    cla = load_assignments(ctx, proxy("in-r2"))[WEB]
    assert priorities(cla) == {
        "10.0.0.4": 0,
        "10.0.0.1": 1,  # every other region: 3, compacted to 1
        "10.0.0.2": 1,
        "10.0.0.3": 1,
        "10.0.0.5": 1,
    }


def test_without_outlier_detection_nothing_changes_and_the_map_is_shared() -> None:
    ctx = context(
        *web(
            CLIENT_R1_Z1_S1,
            client_pod("in-r2", "n-r2-z3"),
            destination_rule("web", {"loadBalancer": {"simple": "ROUND_ROBIN"}}),
        )
    )
    a = generator.generate(ctx, proxy(), type_urls.ENDPOINT)
    b = generator.generate(ctx, proxy("in-r2"), type_urls.ENDPOINT)
    assert a is b  # one map for every proxy, as before locality LB existed
    assert set(priorities(load_assignments(ctx, proxy())[WEB]).values()) == {0}


def test_failover_list_without_outlier_detection_changes_nothing_and_warns() -> None:
    rule = destination_rule(
        "web", {"loadBalancer": {"localityLbSetting": {"failover": [{"from": "r1", "to": "r3"}]}}}
    )
    ctx = context(*web(CLIENT_R1_Z1_S1, rule))
    assert set(priorities(load_assignments(ctx, proxy())[WEB]).values()) == {0}
    assert not clusters(ctx, proxy())[WEB].common_lb_config.HasField("locality_weighted_lb_config")
    warnings = [(w.field, w.message) for w in ctx.reference_warnings()]
    assert (
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover",
        "outlier detection policy must be provided for failover: without outlierDetection "
        "this setting has no effect",
    ) in warnings


def test_enabled_false_turns_the_default_off_even_with_outlier_detection() -> None:
    rule = destination_rule(
        "web",
        {"outlierDetection": OUTLIER, "loadBalancer": {"localityLbSetting": {"enabled": False}}},
    )
    ctx = context(*web(CLIENT_R1_Z1_S1, rule))
    assert set(priorities(load_assignments(ctx, proxy())[WEB]).values()) == {0}
    assert generator.generate(ctx, proxy(), type_urls.ENDPOINT) is shared_map(ctx)


# --- failover and failoverPriority ---------------------------------------------------------------


def test_failover_puts_the_named_region_before_the_others() -> None:
    rule = destination_rule(
        "web",
        {
            "outlierDetection": OUTLIER,
            "loadBalancer": {"localityLbSetting": {"failover": [{"from": "r1", "to": "r3"}]}},
        },
    )
    ctx = context(*web(CLIENT_R1_Z1_S1, rule))
    assert priorities(load_assignments(ctx, proxy())[WEB]) == {
        "10.0.0.1": 0,
        "10.0.0.2": 1,
        "10.0.0.3": 2,
        "10.0.0.5": 3,  # r3: the failover target
        "10.0.0.4": 4,  # r2: after it
    }
    assert clusters(ctx, proxy())[WEB].common_lb_config.HasField("locality_weighted_lb_config")
    # A proxy in a region no rule starts from: plain closeness.
    ctx2 = context(*web(client_pod("in-r2", "n-r2-z3"), rule))
    assert set(priorities(load_assignments(ctx2, proxy("in-r2"))[WEB]).values()) == {0, 1}


def test_failover_priority_orders_by_matching_labels() -> None:
    pods = [
        backend_pod("v1-z1", "10.0.0.1", "n-r1-z1", version="v1"),
        backend_pod("v1-z2", "10.0.0.2", "n-r1-z2", version="v1"),
        backend_pod("v2-z1", "10.0.0.3", "n-r1-z1", version="v2"),
        backend_pod("v2-z2", "10.0.0.4", "n-r1-z2", version="v2"),
    ]
    setting = {"failoverPriority": ["version", "topology.kubernetes.io/zone"]}
    rule = destination_rule(
        "web", {"outlierDetection": OUTLIER, "loadBalancer": {"localityLbSetting": setting}}
    )
    ctx = context(*web(client_pod("client", "n-r1-z1", version="v1"), rule, pods=pods))
    assert priorities(load_assignments(ctx, proxy())[WEB]) == {
        "10.0.0.1": 0,  # version and zone match
        "10.0.0.2": 1,  # version only
        "10.0.0.3": 2,  # not even the first label
        "10.0.0.4": 2,
    }
    # Split groups keep their locality and are weighted by what they hold.
    cla = load_assignments(ctx, proxy())[WEB]
    assert sorted(
        (g.locality.zone, g.priority, g.load_balancing_weight.value) for g in cla.endpoints
    ) == [
        ("z1", 0, 1),
        ("z1", 2, 1),
        ("z2", 1, 1),
        ("z2", 2, 1),
    ]
    # A proxy with other label values gets its own variant.
    ctx2 = context(*web(client_pod("client", "n-r1-z2", version="v2"), rule, pods=pods))
    assert priorities(load_assignments(ctx2, proxy())[WEB]) == {
        "10.0.0.4": 0,
        "10.0.0.3": 1,
        "10.0.0.1": 2,
        "10.0.0.2": 2,
    }


def test_failover_priority_key_value_fixes_the_value_for_every_proxy() -> None:
    pods = [
        backend_pod("v1", "10.0.0.1", "n-r1-z1", version="v1"),
        backend_pod("v2", "10.0.0.2", "n-r1-z1", version="v2"),
    ]
    setting = {"failoverPriority": ["version=v2"]}
    rule = destination_rule(
        "web", {"outlierDetection": OUTLIER, "loadBalancer": {"localityLbSetting": setting}}
    )
    ctx = context(*web(client_pod("client", "n-r1-z1", version="v1"), rule, pods=pods))
    assert priorities(load_assignments(ctx, proxy())[WEB]) == {"10.0.0.2": 0, "10.0.0.1": 1}


def test_failover_priority_then_failover_regions() -> None:
    pods = [
        backend_pod("a-r1", "10.0.0.1", "n-r1-z1", tier="a"),
        backend_pod("a-r2", "10.0.0.2", "n-r2-z3", tier="a"),
        backend_pod("a-r3", "10.0.0.3", "n-r3-z4", tier="a"),
        backend_pod("b-r1", "10.0.0.4", "n-r1-z1", tier="b"),
    ]
    setting = {"failoverPriority": ["tier"], "failover": [{"from": "r1", "to": "r3"}]}
    rule = destination_rule(
        "web", {"outlierDetection": OUTLIER, "loadBalancer": {"localityLbSetting": setting}}
    )
    ctx = context(*web(client_pod("client", "n-r1-z1", tier="a"), rule, pods=pods))
    assert priorities(load_assignments(ctx, proxy())[WEB]) == {
        "10.0.0.1": 0,  # tier a, same zone
        "10.0.0.3": 1,  # tier a, failover region r3
        "10.0.0.2": 2,  # tier a, other region
        "10.0.0.4": 3,  # tier b (same zone, but the labels come first)
    }


def test_failover_priority_is_skipped_for_a_proxy_without_labels_or_locality() -> None:
    setting = {"failoverPriority": ["version"]}
    rule = destination_rule(
        "web", {"outlierDetection": OUTLIER, "loadBalancer": {"localityLbSetting": setting}}
    )
    ctx = context(*web(rule))
    assert set(priorities(load_assignments(ctx, proxy())[WEB]).values()) == {0}


# --- distribute ----------------------------------------------------------------------------------


def test_distribute_sets_locality_weights_for_proxies_it_names() -> None:
    setting = {"distribute": [{"from": "r1/z1/*", "to": {"r1/z1/*": 70, "r1/z2": 20, "r3": 10}}]}
    rule = destination_rule("web", {"loadBalancer": {"localityLbSetting": setting}})
    ctx = context(*web(CLIENT_R1_Z1_S1, client_pod("in-r2", "n-r2-z3"), rule))
    cla = load_assignments(ctx, proxy())[WEB]
    # r1/z1 holds two subzone groups of one endpoint each: 70 split in proportion, rounded up.
    assert sorted(
        (g.locality.zone, g.locality.sub_zone, g.load_balancing_weight.value, len(g.lb_endpoints))
        for g in cla.endpoints
    ) == [
        ("z1", "s1", 35, 1),
        ("z1", "s2", 35, 1),
        ("z2", "", 20, 1),
        ("z3", "", 1, 0),  # r2 is in no `to`: its endpoints are dropped
        ("z4", "", 10, 1),
    ]
    assert set(priorities(cla).values()) == {0}  # no outlier detection needed, no priorities
    assert clusters(ctx, proxy())[WEB].common_lb_config.HasField("locality_weighted_lb_config")
    # A proxy no `from` matches gets the plain assignment (weights = endpoint counts).
    other = load_assignments(ctx, proxy("in-r2"))[WEB]
    assert weights(other) == {zone: (1, 1) for zone in weights(cla)}
    assert generator.generate(ctx, proxy("in-r2"), type_urls.ENDPOINT)[WEB] is shared_map(ctx)[WEB]


def test_distribute_rounds_a_shared_weight_up() -> None:
    pods = [
        backend_pod("a", "10.0.0.1", "n-r1-z1"),
        backend_pod("b", "10.0.0.2", "n-r1-z2"),
        backend_pod("c", "10.0.0.3", "n-r1-z2"),
        backend_pod("d", "10.0.0.4", "n-r2-z3"),
    ]
    setting = {"distribute": [{"from": "*", "to": {"r1": 50, "r2": 50}}]}
    rule = destination_rule("web", {"loadBalancer": {"localityLbSetting": setting}})
    ctx = context(*web(rule, pods=pods))
    # r1: z1 (1 endpoint) and z2 (2): 50 * 1/3 -> 17, 50 * 2/3 -> 34.
    assert weights(load_assignments(ctx, proxy())[WEB]) == {
        ("r1", "z1"): (17, 1),
        ("r1", "z2"): (34, 2),
        ("r2", "z3"): (50, 1),
    }


# --- which clusters, which proxies ----------------------------------------------------------------


def test_only_clusters_with_a_locality_policy_vary_and_others_keep_the_shared_resource() -> None:
    ctx = context(*web(CLIENT_R1_Z1_S1, destination_rule("web", {"outlierDetection": OUTLIER})))
    variant = generator.generate(ctx, proxy(), type_urls.ENDPOINT)
    shared = shared_map(ctx)
    assert variant is not shared and list(variant) == list(shared)
    assert variant[API] is shared[API]
    assert variant[WEB] is not shared[WEB]


def test_subset_policy_applies_to_its_cluster_only() -> None:
    pods = [
        backend_pod("v1-z1", "10.0.0.1", "n-r1-z1", version="v1"),
        backend_pod("v1-r2", "10.0.0.2", "n-r2-z3", version="v1"),
    ]
    rule = destination_rule(
        "web",
        subsets=[
            {
                "name": "v1",
                "labels": {"version": "v1"},
                "trafficPolicy": {"outlierDetection": OUTLIER},
            }
        ],
    )
    ctx = context(*web(CLIENT_R1_Z1_S1, rule, pods=pods))
    found = load_assignments(ctx, proxy())
    assert set(priorities(found[WEB]).values()) == {0}
    v1 = f"outbound|80|v1|web.{NS}.svc.cluster.local"
    assert priorities(found[v1]) == {"10.0.0.1": 0, "10.0.0.2": 1}


def test_subset_setting_with_inherited_outlier_detection_localizes_its_cluster() -> None:
    # Top level: locality LB off. The subset's loadBalancer replaces that and inherits the
    # top-level outlierDetection (istiod's MergeTrafficPolicy): its cluster fails over.
    rule = destination_rule(
        "web",
        {"outlierDetection": OUTLIER, "loadBalancer": {"localityLbSetting": {"enabled": False}}},
        subsets=[
            {
                "name": "all",
                "labels": {"app": "web"},
                "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"enabled": True}}},
            }
        ],
    )
    ctx = context(*web(CLIENT_R1_Z1_S1, rule))
    found = load_assignments(ctx, proxy())
    assert set(priorities(found[WEB]).values()) == {0}
    subset = f"outbound|80|all|web.{NS}.svc.cluster.local"
    assert set(priorities(found[subset]).values()) == {0, 1, 2, 3}


def test_port_level_policy_replaces_the_top_level_one() -> None:
    rule = destination_rule(
        "web",
        {
            "outlierDetection": OUTLIER,
            "portLevelSettings": [{"port": {"number": 80}, "loadBalancer": {"simple": "RANDOM"}}],
        },
    )
    ctx = context(*web(CLIENT_R1_Z1_S1, rule))
    # Port 80's entry has no outlierDetection: no failover for that port.
    assert set(priorities(load_assignments(ctx, proxy())[WEB]).values()) == {0}


# --- where the proxy is --------------------------------------------------------------------------


def locality_of(*raws: Raw, p: Proxy | None = None) -> Locality:
    return proxy_locality(context(*NODES, *raws), p or proxy())


def test_proxy_locality_from_its_pod_and_node() -> None:
    assert locality_of(CLIENT_R1_Z1_S1) == Locality("r1", "z1", "s1")


def test_proxy_locality_from_the_pods_istio_locality_label() -> None:
    raw = client_pod("client", "n-r1-z1", **{"istio-locality": "r9.z9.s9"})
    assert locality_of(raw) == Locality("r9", "z9", "s9")


def test_proxy_locality_from_topology_labels_it_sends() -> None:
    labels = {"topology.kubernetes.io/region": "r2", "topology.kubernetes.io/zone": "z3"}
    assert locality_of(p=proxy(labels=labels)) == Locality("r2", "z3", "")
    assert locality_of(p=proxy(labels={"istio-locality": "r4.z4"})) == Locality("r4", "z4", "")


def test_proxy_locality_from_node_locality_last() -> None:
    assert locality_of(p=proxy(locality="r5/z5/s5")) == Locality("r5", "z5", "s5")
    # A Pod on a Node with topology labels wins over it.
    assert locality_of(CLIENT_R1_Z1_S1, p=proxy(locality="r5/z5/s5")) == Locality("r1", "z1", "s1")


def test_node_locality_reaches_the_proxy_and_the_bootstrap_flag_writes_it() -> None:
    stream = SotwStream(lambda ctx, p, t: {})
    node_msg = base_pb2.Node(
        id=f"sidecar~10.1.0.9~client.{NS}~{NS}.svc.cluster.local",
        locality=base_pb2.Locality(region="r1", zone="z1"),
    )
    request = discovery_pb2.DiscoveryRequest(node=node_msg, type_url=type_urls.CLUSTER)
    stream.on_request(request, None)
    assert stream.proxy is not None and stream.proxy.locality == "r1/z1/"
    document = build_bootstrap(
        node_id=node_msg.id, xds_address="127.0.0.1:15010", locality="r1/z1/s1"
    )
    assert document["node"]["locality"] == {"region": "r1", "zone": "z1", "sub_zone": "s1"}


def test_locality_rule_matching() -> None:
    here = Locality("r1", "z1", "s1")
    assert locality_matches(here, "r1")
    assert locality_matches(here, "r1/z1/*")
    assert locality_matches(here, "*")
    assert locality_matches(here, "r1/*/s1")
    assert not locality_matches(here, "r1/z2")
    assert not locality_matches(here, "r2/*")


# --- the cache across pushes ----------------------------------------------------------------------


def test_no_locality_policy_costs_nothing_extra() -> None:
    ctx = context(*web(CLIENT_R1_Z1_S1))
    found = generator.generate(ctx, proxy(), type_urls.ENDPOINT)
    assert found is shared_map(ctx)
    assert variants(ctx) == 0


def test_proxies_in_one_locality_share_one_variant() -> None:
    ctx = context(
        *web(
            CLIENT_R1_Z1_S1,
            client_pod("client-2", "n-r1-z1", **{"topology.istio.io/subzone": "s1"}),
            client_pod("far", "n-r3-z4"),
            destination_rule("web", {"outlierDetection": OUTLIER}),
        )
    )
    a = generator.generate(ctx, proxy(), type_urls.ENDPOINT)
    b = generator.generate(ctx, proxy("client-2"), type_urls.ENDPOINT)
    c = generator.generate(ctx, proxy("far"), type_urls.ENDPOINT)
    assert a is b and a is not c
    assert variants(ctx) == 2


def test_endpoint_only_push_reaches_every_locality_variant() -> None:
    rule = destination_rule("web", {"outlierDetection": OUTLIER})
    clients = [CLIENT_R1_Z1_S1, client_pod("far", "n-r3-z4")]
    before_objects = parse(*web(*clients, rule))
    live = generator.ConfigGenerator()
    old = PushContext(before_objects, domain="cluster.local", version="1")
    before = {name: live(old, proxy(name), type_urls.ENDPOINT) for name in ("client", "far")}
    shared_before = live.cache.peek(generator.EDS_KEY)

    # One more web pod in r3 (an EndpointSlice change only); api is untouched.
    new_pod = backend_pod("r3-b", "10.0.0.6", "n-r3-z4")
    after_objects = parse(*web(*clients, rule, pods=[*WEB_PODS, new_pod]))
    new = PushContext(after_objects, domain="cluster.local", version="2")
    changed = {
        k
        for k in before_objects.keys() | after_objects.keys()
        if before_objects.get(k) != after_objects.get(k)
    }
    dropped = live.cache.advance(old, new, changed_deps(changed, before_objects, after_objects))
    assert dropped.types == {type_urls.ENDPOINT} and dropped.eds_clusters == {WEB}
    after = {name: live(new, proxy(name), type_urls.ENDPOINT) for name in ("client", "far")}

    assert (
        priorities(ClusterLoadAssignment.FromString(after["client"][WEB].payload))["10.0.0.6"] == 3
    )
    assert priorities(ClusterLoadAssignment.FromString(after["far"][WEB].payload))["10.0.0.6"] == 0
    for name in ("client", "far"):
        assert after[name][WEB].version != before[name][WEB].version
        assert after[name][API] is before[name][API]  # unchanged clusters: the same Resource
        assert list(after[name]) == list(before[name])
    assert live.cache.peek(generator.EDS_KEY)[API] is shared_before[API]
    # Kept entries give what a fresh build gives.
    fresh = context(*web(*clients, rule, pods=[*WEB_PODS, new_pod]))
    for name in ("client", "far"):
        assert (
            after[name][WEB].version
            == generator.generate(fresh, proxy(name), type_urls.ENDPOINT)[WEB].version
        )


def shared_map(ctx: PushContext) -> Any:
    """The EDS map every proxy without a locality policy shares, as `generate` cached it."""
    return generator.offline_generator(ctx).cache.peek(generator.EDS_KEY)


def variants(ctx: PushContext) -> int:
    return generator.offline_generator(ctx).cache.stats()["by_tag"].get(generator.EDS_VARIANT, 0)


# --- parsing and validation ----------------------------------------------------------------------


def parse_setting(setting: dict[str, Any], outlier: bool = True) -> LocalityLbSetting | None:
    policy: dict[str, Any] = {"loadBalancer": {"localityLbSetting": setting}}
    if outlier:
        policy["outlierDetection"] = OUTLIER
    parsed = parse_destination_rule(destination_rule("web", policy)).traffic_policy
    assert parsed is not None and parsed.load_balancer is not None
    return parsed.load_balancer.locality_lb_setting


def test_parses_every_field() -> None:
    assert parse_setting(
        {
            "enabled": True,
            "failover": [{"from": "r1", "to": "r2"}],
            "failoverPriority": ["version", "tier=gold"],
        }
    ) == LocalityLbSetting(
        enabled=True,
        failover=(LocalityFailover("r1", "r2"),),
        failover_priority=("version", "tier=gold"),
    )
    assert parse_setting(
        {"distribute": [{"from": "r1/z1/*", "to": {"r1/z1/*": 80, "r2/*": 20}}]}
    ) == LocalityLbSetting(
        distribute=(LocalityDistribute("r1/z1/*", (("r1/z1/*", 80), ("r2/*", 20))),)
    )


BASE = "spec.trafficPolicy.loadBalancer.localityLbSetting"


@pytest.mark.parametrize(
    ("setting", "field", "message"),
    [
        (
            {
                "distribute": [{"from": "r1", "to": {"r1": 100}}],
                "failover": [{"from": "r1", "to": "r2"}],
            },
            f"{BASE}.failover",
            "can not simultaneously specify 'distribute' and 'failover'",
        ),
        (
            {
                "failover": [{"from": "r1", "to": "r2"}],
                "failoverPriority": ["version", "topology.kubernetes.io/zone"],
            },
            f"{BASE}.failoverPriority[1]",
            "topology label",
        ),
        (
            {"distribute": [{"from": "r1", "to": {"r1": 60, "r2": 30}}]},
            f"{BASE}.distribute[0].to",
            "total locality weight 90 != 100",
        ),
        (
            {"distribute": [{"from": "r1", "to": {"r1": 0, "r2": 100}}]},
            f"{BASE}.distribute[0].to.r1",
            "range [1, 100]",
        ),
        (
            {"distribute": [{"from": "r1", "to": {"r1": 101}}]},
            f"{BASE}.distribute[0].to.r1",
            "range [1, 100]",
        ),
        (
            {"distribute": [{"from": "r1", "to": {"r1/z1": 50, "r1/*/s1": 50}}]},
            f"{BASE}.distribute[0].to.r1/*/s1",
            "wildcard",
        ),
        (
            {"distribute": [{"from": "r1", "to": {"r1/*": 50, "r1/z1": 50}}]},
            f"{BASE}.distribute[0].to.r1/z1",
            "overlaps",
        ),
        (
            {"distribute": [{"from": "r1//s1", "to": {"r1": 100}}]},
            f"{BASE}.distribute[0].from",
            "empty region/zone/subzone",
        ),
        (
            {
                "distribute": [
                    {"from": "r1", "to": {"r1": 100}},
                    {"from": "r1/z1", "to": {"r1": 100}},
                ]
            },
            f"{BASE}.distribute[1].from",
            "overlaps",
        ),
        (
            {"failover": [{"from": "r1", "to": "r1"}]},
            f"{BASE}.failover[0].to",
            "different regions",
        ),
        ({"failover": [{"from": "r1/z1", "to": "r2"}]}, f"{BASE}.failover[0].from", "region"),
        ({"failover": [{"from": "r1", "to": "r*"}]}, f"{BASE}.failover[0].to", "wildcard"),
        ({"enabled": "yes"}, f"{BASE}.enabled", "true or false"),
        ({"failoverPriority": "version"}, f"{BASE}.failoverPriority", "list"),
    ],
)
def test_invalid_settings_name_the_field(setting: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_setting(setting)
    assert err.value.field == field
    assert message in err.value.message


def test_failover_priority_warns_without_outlier_detection_at_any_level() -> None:
    rule = parse_destination_rule(
        destination_rule(
            "web",
            {"outlierDetection": OUTLIER},
            subsets=[
                {
                    "name": "v1",
                    "labels": {"version": "v1"},
                    # inherits the top-level outlierDetection: no warning
                    "trafficPolicy": {
                        "loadBalancer": {"localityLbSetting": {"failoverPriority": ["a"]}}
                    },
                }
            ],
        )
    )
    assert rule.unapplied() == []
    rule = parse_destination_rule(
        destination_rule(
            "web",
            {
                "portLevelSettings": [
                    {
                        "port": {"number": 80},
                        "loadBalancer": {"localityLbSetting": {"failoverPriority": ["a"]}},
                    }
                ]
            },
        )
    )
    assert [f for f, _ in rule.unapplied()] == [
        "spec.trafficPolicy.portLevelSettings[0].loadBalancer.localityLbSetting.failoverPriority"
    ]


def test_a_proxy_in_a_namespace_with_its_own_rule_gets_its_own_variant() -> None:
    own = destination_rule("web", {"loadBalancer": {"localityLbSetting": {"enabled": False}}})
    own["metadata"] = {"name": "web-local", "namespace": "team"}
    own["spec"]["host"] = f"web.{NS}.svc.cluster.local"
    own["spec"]["exportTo"] = ["."]
    ctx = context(
        *web(
            CLIENT_R1_Z1_S1,
            pod("client", "team", ip="10.1.0.8", node_name="n-r1-z1"),
            destination_rule("web", {"outlierDetection": OUTLIER}),
            own,
        )
    )
    in_team = parse_proxy("sidecar~10.1.0.8~client.team~team.svc.cluster.local", {})
    assert isinstance(ctx, PushContext) and ctx.namespace_scoped
    assert set(priorities(load_assignments(ctx, in_team)[WEB]).values()) == {0}
    assert set(priorities(load_assignments(ctx, proxy())[WEB]).values()) == {0, 1, 2, 3}
