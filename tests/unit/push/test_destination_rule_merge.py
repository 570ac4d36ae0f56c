"""DestinationRules of one host, as istiod consolidates them (mergeDestinationRule): rules of
one namespace and exportTo merge (subsets appended, first name wins; the first top-level
trafficPolicy); and `workloadSelector` (SidecarScope.DestinationRule): a rule of the proxy's
namespace whose selector picks it wins there, and touches no other workload."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite import type_urls
from istiolite.model.destinationrule import parse_destination_rule
from istiolite.model.proxy import Proxy
from istiolite.model.validation import ValidationError
from istiolite.networking import generator
from istiolite.push.context import PushContext
from tests.support.objects import context, hostname, outbound_cluster, pod, service
from tests.unit.networking.helpers import Cluster, clusters, sidecar

Raw = dict[str, Any]
WEB = hostname("web", "shop")
WEB_CLUSTER = outbound_cluster("web", 80, "shop")


def rule(
    name: str,
    namespace: str = "shop",
    *,
    subsets: list[tuple[str, str]] | None = None,
    lb: str | None = None,
    export_to: list[str] | None = None,
    selector: dict[str, str] | None = None,
    host: str = WEB,
) -> Raw:
    spec: Raw = {"host": host}
    if subsets:
        spec["subsets"] = [{"name": n, "labels": {"version": v}} for n, v in subsets]
    if lb:
        spec["trafficPolicy"] = {"loadBalancer": {"simple": lb}}
    if export_to is not None:
        spec["exportTo"] = export_to
    if selector is not None:
        spec["workloadSelector"] = {"matchLabels": selector}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def mesh(*raws: Raw) -> PushContext:
    return context(service("web", "shop"), service("api", "other"), *raws)


def subset_names(
    ctx: PushContext, namespace: str | None, labels: dict[str, str] | None = None
) -> list[str]:
    return [s.name for s in ctx.subsets(WEB, namespace, labels)]


def lb(ctx: PushContext, proxy: Proxy, name: str = WEB_CLUSTER) -> str:
    return Cluster.LbPolicy.Name(clusters(ctx, proxy)[name].lb_policy)


def subset_cluster(name: str) -> str:
    return WEB_CLUSTER.replace("||", f"|{name}|")


# -- merging ---------------------------------------------------------------------------------


def test_rules_of_one_host_merge_subsets_first_name_wins() -> None:
    ctx = mesh(
        rule("a", subsets=[("v1", "v1"), ("v2", "v2")]),
        rule("b", subsets=[("v2", "other"), ("v3", "v3")]),
    )
    for namespace in ("shop", "other", None):
        assert subset_names(ctx, namespace) == ["v1", "v2", "v3"]
    merged = ctx.destination_rule(WEB, "shop")
    assert merged is not None and merged.meta.name == "a"
    assert merged.subset("v2").labels == {"version": "v2"}  # type: ignore[union-attr]
    names = set(clusters(ctx, sidecar("other")))
    assert {subset_cluster("v1"), subset_cluster("v2"), subset_cluster("v3")} <= names


def test_first_top_level_traffic_policy_wins_else_the_next() -> None:
    ctx = mesh(rule("a", lb="RANDOM"), rule("b", lb="ROUND_ROBIN", subsets=[("v1", "v1")]))
    assert lb(ctx, sidecar("other")) == "RANDOM"
    assert lb(ctx, sidecar("other"), subset_cluster("v1")) == "RANDOM"
    ctx = mesh(rule("a", subsets=[("v1", "v1")]), rule("b", lb="ROUND_ROBIN"))
    assert lb(ctx, sidecar("other")) == "ROUND_ROBIN"
    assert subset_names(ctx, "other") == ["v1"]


def test_declared_rules_stay_as_written() -> None:
    ctx = mesh(rule("a", subsets=[("v1", "v1")]), rule("b", subsets=[("v2", "v2")]))
    assert [len(dr.subsets) for dr in ctx.all_destination_rules()] == [1, 1]


def test_different_export_to_does_not_merge() -> None:
    # "b" is private to shop; "a" is public: other namespaces see only "a".
    ctx = mesh(
        rule("a", subsets=[("v1", "v1")]), rule("b", subsets=[("v2", "v2")], export_to=["."])
    )
    assert subset_names(ctx, "other") == ["v1"]
    assert subset_names(ctx, "shop") == ["v1"]  # the first in the namespace's own view


def test_wider_export_to_merges_into_the_narrower_and_stays_itself() -> None:
    # istiod: a new rule whose exportTo covers an existing one's merges into it and is also kept.
    ctx = mesh(
        rule("a", subsets=[("v1", "v1")], export_to=["other"]),
        rule("b", subsets=[("v2", "v2")], export_to=["other", "third"]),
    )
    assert subset_names(ctx, "other") == ["v1", "v2"]
    assert subset_names(ctx, "third") == ["v2"]


def test_rules_in_different_namespaces_do_not_merge() -> None:
    ctx = mesh(rule("a", subsets=[("v1", "v1")]), rule("b", "other", subsets=[("v2", "v2")]))
    assert subset_names(ctx, "other") == ["v2"]
    assert subset_names(ctx, "shop") == ["v1"]
    assert subset_names(ctx, "third") == ["v1"]


# -- workloadSelector --------------------------------------------------------------------------

CANARY = {"app": "client", "track": "canary"}


def selector_mesh() -> PushContext:
    return mesh(
        rule("base", "other", lb="RANDOM", subsets=[("v1", "v1")]),
        rule("canary", "other", lb="ROUND_ROBIN", subsets=[("v2", "v2")], selector=CANARY),
        pod("canary-1", "other", ip="10.1.0.7", labels=CANARY),
        pod("client-1", "other", ip="10.1.0.8", labels={"app": "client"}),
    )


def test_selected_sidecar_gets_the_selector_rule() -> None:
    ctx = selector_mesh()
    assert subset_names(ctx, "other", CANARY) == ["v2"]
    canary = sidecar("other", "canary-1", labels=CANARY)
    assert lb(ctx, canary) == "ROUND_ROBIN"
    assert subset_cluster("v2") in clusters(ctx, canary)
    assert subset_cluster("v1") not in clusters(ctx, canary)


def test_selector_rule_does_not_touch_other_workloads() -> None:
    ctx = selector_mesh()
    plain = sidecar("other", "client-1", labels={"app": "client"})
    assert lb(ctx, plain) == "RANDOM"
    assert subset_cluster("v2") not in clusters(ctx, plain)
    # Not in another namespace either, even with matching labels.
    elsewhere = sidecar("shop", "canary-9", labels=CANARY)
    assert lb(ctx, elsewhere) == "LEAST_REQUEST"
    assert subset_names(ctx, "shop", CANARY) == []


def test_labels_come_from_the_pod_when_the_proxy_sends_none() -> None:
    ctx = selector_mesh()
    assert lb(ctx, sidecar("other", "canary-1")) == "ROUND_ROBIN"
    assert lb(ctx, sidecar("other", "client-1")) == "RANDOM"


def test_unpicked_sidecar_falls_back_past_a_selector_only_namespace() -> None:
    ctx = mesh(
        rule("owner", lb="RANDOM"),
        rule("canary", "other", lb="ROUND_ROBIN", selector=CANARY),
    )
    assert lb(ctx, sidecar("other", labels={"app": "client"})) == "RANDOM"
    assert lb(ctx, sidecar("other", labels=CANARY)) == "ROUND_ROBIN"


def test_rules_with_the_same_selector_merge_others_do_not() -> None:
    ctx = mesh(
        rule("base", "other", subsets=[("v1", "v1")]),
        rule("c1", "other", subsets=[("v2", "v2")], selector=CANARY),
        rule("c2", "other", subsets=[("v3", "v3")], selector=dict(CANARY)),
        rule("d", "other", subsets=[("v4", "v4")], selector={"app": "debug"}),
    )
    assert subset_names(ctx, "other", CANARY) == ["v2", "v3"]
    assert subset_names(ctx, "other", {"app": "debug"}) == ["v4"]
    assert subset_names(ctx, "other", {"app": "client"}) == ["v1"]
    # EDS is shared: every subset any rule defines has its endpoints.
    assert [s.name for s in ctx.all_subsets(WEB)] == ["v1", "v2", "v3", "v4"]


# -- cache keys ------------------------------------------------------------------------------


def test_cluster_results_shared_unless_a_selector_picks_the_proxy() -> None:
    ctx = selector_mesh()
    one = sidecar("other", "client-1", labels={"app": "client"})
    two = sidecar("other", "client-2", ip="10.1.0.9", labels={"app": "client", "x": "y"})
    canary = sidecar("other", "canary-1", labels=CANARY)
    canary2 = sidecar("other", "canary-2", ip="10.1.0.10", labels={**CANARY, "pod": "2"})
    assert ctx.workload_key("other", {"app": "client"}) is None
    assert ctx.workload_key("shop", CANARY) is None
    shared = generator.generate(ctx, one, type_urls.CLUSTER)
    assert generator.generate(ctx, two, type_urls.CLUSTER) is shared
    picked = generator.generate(ctx, canary, type_urls.CLUSTER)
    assert picked is not shared
    # Proxies picked by the same selectors share one result.
    assert generator.generate(ctx, canary2, type_urls.CLUSTER) is picked


def test_no_selector_keeps_one_view_for_all_namespaces() -> None:
    ctx = mesh(rule("a", subsets=[("v1", "v1")]), rule("b", subsets=[("v2", "v2")]))
    assert not ctx.namespace_scoped
    a, b = sidecar("other", labels={"app": "x"}), sidecar("third", labels={"app": "y"})
    assert generator.generate(ctx, a, type_urls.CLUSTER) is generator.generate(
        ctx, b, type_urls.CLUSTER
    )
    # A selector rule keeps the rest shared too.
    ctx = mesh(rule("base", lb="RANDOM"), rule("canary", lb="ROUND_ROBIN", selector=CANARY))
    assert not ctx.namespace_scoped
    a, b = sidecar("other", labels=CANARY), sidecar("shop", labels={"app": "y"})
    assert generator.generate(ctx, a, type_urls.CLUSTER) is generator.generate(
        ctx, b, type_urls.CLUSTER
    )
    assert lb(ctx, a) == "RANDOM"
    assert lb(ctx, sidecar("shop", labels=CANARY)) == "ROUND_ROBIN"


def test_workload_selector_is_parsed_and_checked() -> None:
    assert parse_destination_rule(rule("a", selector=CANARY)).workload_selector == CANARY
    assert parse_destination_rule(rule("a")).workload_selector is None
    with pytest.raises(ValidationError, match="wildcards"):
        parse_destination_rule(rule("a", selector={"app": "web*"}))
