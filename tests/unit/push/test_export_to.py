"""exportTo, as istiod applies it: which Services and ServiceEntries a proxy's namespace sees
(IsServiceVisible), which VirtualService routes a host there (virtualServiceIndex: private,
exported to it, public), and which DestinationRule applies (destinationRule: the proxy's
namespace, then the service's, then the root namespace)."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc

from istiolite import type_urls
from istiolite.model.proxy import Proxy
from istiolite.model.visibility import EXPORT_TO_ANNOTATION
from istiolite.networking import generator
from istiolite.push.context import PushContext
from tests.support.objects import (
    context,
    endpoint_slice,
    hostname,
    outbound_cluster,
    pod,
    service,
    service_port,
)
from tests.unit.networking.helpers import (
    Cluster,
    RouteConfiguration,
    all_chains,
    clusters,
    listeners,
    load_assignments,
    router,
    routes,
    sidecar,
    tcp_proxy,
)

Raw = dict[str, Any]
ROOT = "istio-system"
WEB = hostname("web", "team-b")
WEB_CLUSTER = outbound_cluster("web", 80, "team-b")


# -- builders ------------------------------------------------------------------------------------


def exported_service(name: str, namespace: str, export_to: str | None, **kw: Any) -> Raw:
    raw = service(name, namespace, **kw)
    if export_to is not None:
        raw["metadata"]["annotations"] = {EXPORT_TO_ANNOTATION: export_to}
    return raw


def virtual_service(
    name: str,
    namespace: str,
    host: str,
    target: str,
    export_to: list[str] | None = None,
    *,
    gateways: list[str] | None = None,
    subset: str = "",
) -> Raw:
    destination: Raw = {"host": target}
    if subset:
        destination["subset"] = subset
    spec: Raw = {"hosts": [host], "http": [{"route": [{"destination": destination}]}]}
    if export_to is not None:
        spec["exportTo"] = export_to
    if gateways is not None:
        spec["gateways"] = gateways
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def destination_rule(
    name: str,
    namespace: str,
    host: str,
    export_to: list[str] | None = None,
    *,
    lb: str = "ROUND_ROBIN",
    subsets: tuple[str, ...] = (),
) -> Raw:
    spec: Raw = {
        "host": host,
        "trafficPolicy": {"loadBalancer": {"simple": lb}},
        "subsets": [{"name": s, "labels": {"version": s}} for s in subsets],
    }
    if export_to is not None:
        spec["exportTo"] = export_to
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def service_entry(name: str, namespace: str, host: str, export_to: list[str] | None) -> Raw:
    spec: Raw = {
        "hosts": [host],
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "resolution": "DNS",
    }
    if export_to is not None:
        spec["exportTo"] = export_to
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def sidecar_resource(namespace: str, hosts: list[str]) -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {"egress": [{"hosts": hosts}]},
    }


def mesh(*extra: Raw, web_export: str | None = None) -> PushContext:
    """web (team-b) and its two versions, api (team-a), plus `extra`."""
    return context(
        exported_service("web", "team-b", web_export, cluster_ip="10.96.2.1"),
        pod("web-v1", "team-b", ip="10.2.0.1", labels={"app": "web", "version": "v1"}),
        pod("web-v2", "team-b", ip="10.2.0.2", labels={"app": "web", "version": "v2"}),
        endpoint_slice(
            "web",
            "team-b",
            endpoints=[
                {"addresses": ["10.2.0.1"], "targetRef": {"kind": "Pod", "name": "web-v1"}},
                {"addresses": ["10.2.0.2"], "targetRef": {"kind": "Pod", "name": "web-v2"}},
            ],
        ),
        service("api", "team-a", cluster_ip="10.96.1.1"),
        *extra,
    )


def outbound(ctx: PushContext, proxy: Proxy) -> set[str]:
    return {n for n in clusters(ctx, proxy) if n.startswith("outbound|")}


def vhost(config: RouteConfiguration, domain: str) -> rc.VirtualHost | None:
    return next((vh for vh in config.virtual_hosts if domain in vh.domains), None)


def route_cluster(ctx: PushContext, proxy: Proxy, domain: str = WEB) -> str | None:
    """The cluster the proxy's port-80 route sends `domain` to (None: no virtual host)."""
    found = vhost(routes(ctx, proxy)["80"], domain)
    return found.routes[0].route.cluster if found else None


def lb_policy(ctx: PushContext, proxy: Proxy, name: str = WEB_CLUSTER) -> str:
    return Cluster.LbPolicy.Name(clusters(ctx, proxy)[name].lb_policy)


def subset(name: str) -> str:
    return WEB_CLUSTER.replace("||", f"|{name}|")


A, B, C = sidecar("team-a"), sidecar("team-b"), sidecar("team-c")


# -- services ------------------------------------------------------------------------------------


def test_nothing_exported_restrictively_keeps_one_view_for_all_namespaces() -> None:
    ctx = mesh()
    assert not ctx.namespace_scoped
    assert ctx.scope_key("team-a") is None
    assert ctx.services_for("team-a") is ctx.services
    # One CDS result shared by every namespace.
    assert generator.generate(ctx, A, type_urls.CLUSTER) is generator.generate(
        ctx, C, type_urls.CLUSTER
    )


def test_service_exported_to_dot_is_seen_only_in_its_namespace() -> None:
    ctx = mesh(web_export=".")
    assert ctx.namespace_scoped
    assert WEB_CLUSTER in outbound(ctx, B)
    assert WEB_CLUSTER not in outbound(ctx, A)
    # No listener, no virtual host either.
    assert "10.96.2.1_80" not in listeners(ctx, A) and "0.0.0.0_80" in listeners(ctx, A)
    assert route_cluster(ctx, A) is None
    assert route_cluster(ctx, B) == WEB_CLUSTER
    # Endpoints stay shared: EDS still carries the assignment.
    assert WEB_CLUSTER in load_assignments(ctx, A)


def test_service_exported_to_named_namespaces() -> None:
    ctx = mesh(web_export="team-a")
    assert WEB_CLUSTER in outbound(ctx, A)
    assert WEB_CLUSTER not in outbound(ctx, C)
    # Naming other namespaces does not include its own.
    assert WEB_CLUSTER not in outbound(ctx, B)
    ctx = mesh(web_export=".,team-c")
    assert WEB_CLUSTER in outbound(ctx, B) and WEB_CLUSTER in outbound(ctx, C)
    assert WEB_CLUSTER not in outbound(ctx, A)


def test_service_exported_to_no_one_is_seen_nowhere() -> None:
    ctx = mesh(web_export="~")
    assert all(WEB_CLUSTER not in outbound(ctx, p) for p in (A, B, C))
    assert outbound_cluster("api", 80, "team-a") in outbound(ctx, B)


def test_service_entry_export_to() -> None:
    ctx = mesh(service_entry("ext", "team-a", "api.example.com", ["."]))
    name = "outbound|80||api.example.com"
    assert name in outbound(ctx, A)
    assert name not in outbound(ctx, B)
    assert vhost(routes(ctx, B)["80"], "api.example.com") is None
    assert vhost(routes(ctx, A)["80"], "api.example.com") is not None


def test_sidecar_imports_only_what_is_exported() -> None:
    """A Sidecar `*/*` import cannot widen exportTo (istiod: servicesExportedToNamespace)."""
    ctx = mesh(sidecar_resource("team-a", ["*/*"]), web_export=".")
    assert WEB_CLUSTER not in outbound(ctx, A)
    assert outbound_cluster("api", 80, "team-a") in outbound(ctx, A)


def test_virtual_service_destination_is_not_inferred_when_hidden() -> None:
    """A Sidecar importing a VirtualService gets clusters for its destinations, but only for
    services exported to the proxy's namespace."""
    ctx = mesh(
        sidecar_resource("team-a", ["./*"]),
        virtual_service("to-web", "team-a", "api", WEB),
        web_export=".",
    )
    assert WEB_CLUSTER not in outbound(ctx, A)
    ctx = mesh(
        sidecar_resource("team-a", ["./*"]),
        virtual_service("to-web", "team-a", "api", WEB),
        web_export="team-a",
    )
    assert WEB_CLUSTER in outbound(ctx, A)


def test_results_for_one_namespace_do_not_leak_into_another() -> None:
    """Caches of one push: the first proxy's namespace must not decide the second's."""
    ctx = mesh(web_export=".")
    assert WEB_CLUSTER in outbound(ctx, B)
    assert WEB_CLUSTER not in outbound(ctx, A)
    assert WEB_CLUSTER in outbound(ctx, sidecar("team-b", "other", ip="10.1.0.98"))


# -- virtual services ----------------------------------------------------------------------------


def test_virtual_service_exported_to_dot_routes_only_its_namespace() -> None:
    ctx = mesh(
        virtual_service("pin", "team-b", "web", "web", ["."], subset="v1"),
        destination_rule("web", "team-b", "web", subsets=("v1", "v2")),
    )
    assert route_cluster(ctx, B) == subset("v1")
    assert route_cluster(ctx, A) == WEB_CLUSTER


def test_virtual_service_exported_elsewhere_skips_its_own_namespace() -> None:
    ctx = mesh(
        virtual_service("pin", "team-b", "web", "web", ["team-a"], subset="v1"),
        destination_rule("web", "team-b", "web", subsets=("v1",)),
    )
    assert route_cluster(ctx, A) == subset("v1")
    assert route_cluster(ctx, B) == WEB_CLUSTER
    assert route_cluster(ctx, C) == WEB_CLUSTER


def test_private_then_exported_then_public_virtual_service_wins() -> None:
    """istiod's VirtualServicesForGateway order; the oldest (here: first by namespace/name)
    within each group. `a-public` sorts first but loses to namespace-specific ones."""
    ctx = mesh(
        destination_rule("web", "team-b", "web", subsets=("v1", "v2", "v3")),
        virtual_service("a-public", "team-a", WEB, WEB, subset="v1"),
        virtual_service("to-c", "team-b", "web", "web", ["team-c"], subset="v2"),
        virtual_service("mine", "team-c", WEB, WEB, ["."], subset="v3"),
    )
    assert route_cluster(ctx, A) == subset("v1")  # only the public one
    assert route_cluster(ctx, B) == subset("v1")  # to-c is not exported to team-b
    assert route_cluster(ctx, C) == subset("v3")  # its own private one first
    ctx = mesh(
        destination_rule("web", "team-b", "web", subsets=("v1", "v2")),
        virtual_service("a-public", "team-a", WEB, WEB, subset="v1"),
        virtual_service("to-c", "team-b", "web", "web", ["team-c"], subset="v2"),
    )
    assert route_cluster(ctx, C) == subset("v2")  # exported to it by name beats public


def test_tcp_routes_follow_the_same_virtual_service_choice() -> None:
    ctx = context(
        service("db", "team-b", cluster_ip="10.96.2.5", ports=[service_port("tcp", 5432)]),
        service("db-new", "team-b", cluster_ip="10.96.2.6", ports=[service_port("tcp", 5432)]),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "db", "namespace": "team-b"},
            "spec": {
                "hosts": ["db"],
                "exportTo": ["."],
                "tcp": [{"route": [{"destination": {"host": "db-new"}}]}],
            },
        },
    )

    def target(proxy: Proxy) -> str:
        chains = all_chains(listeners(ctx, proxy)["10.96.2.5_5432"])
        return tcp_proxy(chains[0]).cluster

    assert target(B) == outbound_cluster("db-new", 5432, "team-b")
    assert target(A) == outbound_cluster("db", 5432, "team-b")


def test_gateway_applies_only_virtual_services_exported_to_its_namespace() -> None:
    gw = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": ROOT},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
            ],
        },
    }
    ctx = mesh(
        gw,
        virtual_service("public", "team-b", "web.example.com", "web", gateways=[f"{ROOT}/gw"]),
        virtual_service(
            "private", "team-b", "shop.example.com", "web", ["."], gateways=[f"{ROOT}/gw"]
        ),
    )

    def domains(namespace: str) -> set[str]:
        found = routes(ctx, router(namespace))
        return {d for config in found.values() for vh in config.virtual_hosts for d in vh.domains}

    assert "web.example.com" in domains(ROOT)
    assert "shop.example.com" not in domains(ROOT)
    assert "shop.example.com" in domains("team-b")


# -- destination rules ---------------------------------------------------------------------------


def test_rule_of_the_proxy_namespace_comes_first() -> None:
    ctx = mesh(
        destination_rule("web", "team-b", "web", lb="RANDOM"),
        destination_rule("web-for-a", "team-a", WEB, lb="ROUND_ROBIN"),
    )
    assert ctx.namespace_scoped  # a consumer-side rule
    assert lb_policy(ctx, A) == "ROUND_ROBIN"
    assert lb_policy(ctx, B) == "RANDOM"
    assert lb_policy(ctx, C) == "RANDOM"


def test_consumer_rule_does_not_apply_to_other_namespaces() -> None:
    ctx = mesh(destination_rule("web-for-a", "team-a", WEB, lb="RANDOM"))
    assert lb_policy(ctx, A) == "RANDOM"
    assert lb_policy(ctx, C) == "LEAST_REQUEST"


def test_service_namespace_rule_only_where_exported() -> None:
    ctx = mesh(destination_rule("web", "team-b", "web", ["."], lb="RANDOM"))
    assert lb_policy(ctx, B) == "RANDOM"
    assert lb_policy(ctx, A) == "LEAST_REQUEST"
    ctx = mesh(destination_rule("web", "team-b", "web", ["team-a"], lb="RANDOM"))
    assert lb_policy(ctx, A) == "RANDOM"
    assert lb_policy(ctx, C) == "LEAST_REQUEST"
    # Exported by name only: not a rule of its own namespace (istiod's namespaceLocal).
    assert lb_policy(ctx, B) == "LEAST_REQUEST"


def test_root_namespace_rule_is_the_fallback() -> None:
    ctx = mesh(
        destination_rule("mesh-wide", ROOT, "*.svc.cluster.local", lb="RANDOM"),
        destination_rule("web", "team-b", "web", ["."], lb="ROUND_ROBIN"),
    )
    assert lb_policy(ctx, B) == "ROUND_ROBIN"
    assert lb_policy(ctx, A) == "RANDOM"  # team-b's rule is private: the root one applies


def test_private_root_rule_applies_only_to_root_proxies() -> None:
    ctx = mesh(destination_rule("mesh-wide", ROOT, "*.svc.cluster.local", ["."], lb="RANDOM"))
    assert lb_policy(ctx, sidecar(ROOT)) == "RANDOM"
    assert lb_policy(ctx, A) == "LEAST_REQUEST"


def test_most_specific_host_then_export_check() -> None:
    """In one namespace the most specific host is chosen first; if that rule is not exported
    to the proxy, the lookup moves on to the next namespace (istiod's
    getExportedDestinationRuleFromNamespace), not to a wider host of the same namespace."""
    ctx = mesh(
        destination_rule("exact", "team-b", "web", ["team-c"], lb="RANDOM"),
        destination_rule("wide", "team-b", "*.team-b.svc.cluster.local", lb="ROUND_ROBIN"),
    )
    assert lb_policy(ctx, C) == "RANDOM"
    assert lb_policy(ctx, A) == "LEAST_REQUEST"
    # In team-b itself only the wide rule applies (the exact one is not exported there).
    assert lb_policy(ctx, B) == "ROUND_ROBIN"
    # A private rule is not among the exported ones at all: the wide one serves others.
    ctx = mesh(
        destination_rule("exact", "team-b", "web", ["."], lb="RANDOM"),
        destination_rule("wide", "team-b", "*.team-b.svc.cluster.local", lb="ROUND_ROBIN"),
    )
    assert lb_policy(ctx, B) == "RANDOM"
    assert lb_policy(ctx, A) == "ROUND_ROBIN"


def test_subsets_follow_the_proxy_rule_and_eds_has_them_all() -> None:
    ctx = mesh(
        destination_rule("web", "team-b", "web", subsets=("v1",)),
        destination_rule("web-for-a", "team-a", WEB, subsets=("v2",)),
    )
    v1, v2 = subset("v1"), subset("v2")
    assert {v1, v2} & outbound(ctx, A) == {v2}
    assert {v1, v2} & outbound(ctx, B) == {v1}
    eds = load_assignments(ctx, A)
    assert {v1, v2} <= set(eds)
    assert [
        lb.endpoint.address.socket_address.address for lb in eds[v2].endpoints[0].lb_endpoints
    ] == ["10.2.0.2"]


def test_route_hash_policy_uses_the_proxy_rule() -> None:
    rule = destination_rule("web-for-a", "team-a", WEB)
    rule["spec"]["trafficPolicy"] = {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-u"}}}
    ctx = mesh(rule)
    a_route = vhost(routes(ctx, A)["80"], WEB)
    c_route = vhost(routes(ctx, C)["80"], WEB)
    assert a_route is not None and c_route is not None
    assert [h.header.header_name for h in a_route.routes[0].route.hash_policy] == ["x-u"]
    assert not c_route.routes[0].route.hash_policy


def test_rules_of_their_own_service_keep_one_view() -> None:
    """The common case stays shared: public rules next to their service, in the root
    namespace, or for hosts nothing serves, resolve the same for every namespace."""
    ctx = mesh(
        destination_rule("web", "team-b", "web", subsets=("v1",)),
        destination_rule("mesh-wide", ROOT, "*.svc.cluster.local", lb="RANDOM"),
        destination_rule("stale", "team-a", "gone.example.com"),
    )
    assert not ctx.namespace_scoped
    assert lb_policy(ctx, A) == lb_policy(ctx, B) == "ROUND_ROBIN"
    assert lb_policy(ctx, A, outbound_cluster("api", 80, "team-a")) == "RANDOM"
