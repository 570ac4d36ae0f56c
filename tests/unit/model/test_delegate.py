"""VirtualService delegation: validation of roots and delegates, istiod's merge rules (matches,
conflicts, names, inherited policies) and what PushContext makes of it (merged roots, warnings)."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.validation import ValidationError
from istiolite.model.virtualservice import (
    Destination,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    Mirror,
    Retries,
    RouteDestination,
    StringMatch,
    parse_virtual_service,
)
from istiolite.model.virtualservice_delegate import (
    match_conflict,
    merge_http_route,
    merge_http_routes,
    merge_match_requests,
    string_match_conflict,
)
from tests.support.objects import context, service
from tests.unit.networking.helpers import routes, sidecar

Raw = dict[str, Any]


def vs(name: str, namespace: str, spec: Raw) -> Raw:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def to(host: str, subset: str = "") -> list[Raw]:
    destination: Raw = {"host": host}
    if subset:
        destination["subset"] = subset
    return [{"destination": destination}]


def prefix(value: str) -> StringMatch:
    return StringMatch("prefix", value)


def exact(value: str) -> StringMatch:
    return StringMatch("exact", value)


def regex(value: str) -> StringMatch:
    return StringMatch("regex", value)


def leaf(name: str = "", *matches: HTTPMatch, **fields: Any) -> HTTPRoute:
    route = (RouteDestination(Destination("api.team.svc.cluster.local")),)
    return HTTPRoute(name=name, match=matches, route=route, **fields)


def rejected(raw: Raw) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_virtual_service(raw)
    return info.value


# --- validation ----------------------------------------------------------------------------


def test_a_virtual_service_without_hosts_is_a_delegate() -> None:
    parsed = parse_virtual_service(vs("api-routes", "team", {"http": [{"route": to("api")}]}))
    assert parsed.is_delegate and not parsed.is_root
    assert parsed.hosts == ()


def test_without_hosts_and_without_http_routes_hosts_are_required() -> None:
    err = rejected(vs("empty", "team", {"hosts": []}))
    assert err.field == "spec.hosts"
    assert "at least one host is required" in err.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gateways", ["istio-system/web-gw"]),
        ("tcp", [{"route": to("db")}]),
        ("tls", [{"match": [{"sniHosts": ["a.example.com"]}], "route": to("a")}]),
    ],
)
def test_a_delegate_has_no_gateways_tcp_or_tls(key: str, value: Any) -> None:
    err = rejected(vs("api-routes", "team", {key: value, "http": [{"route": to("api")}]}))
    assert err.field == f"spec.{key}"
    assert "delegate VirtualService" in err.message


def test_a_delegate_cannot_delegate_again() -> None:
    err = rejected(
        vs("api-routes", "team", {"http": [{"route": to("api")}, {"delegate": {"name": "more"}}]})
    )
    assert err.field == "spec.http[1].delegate"
    assert "cannot delegate again" in err.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("route", to("web")),
        ("redirect", {"uri": "/elsewhere"}),
        ("directResponse", {"status": 404}),
    ],
)
def test_a_delegating_route_has_no_route_redirect_or_direct_response(key: str, value: Any) -> None:
    raw = vs(
        "web",
        "shop",
        {"hosts": ["web"], "http": [{"delegate": {"name": "api-routes"}, key: value}]},
    )
    err = rejected(raw)
    assert err.field == f"spec.http[0].{key}"
    assert "must not specify" in err.message


def test_delegate_namespace_defaults_to_the_roots() -> None:
    parsed = parse_virtual_service(
        vs(
            "web",
            "shop",
            {
                "hosts": ["web"],
                "http": [
                    {"delegate": {"name": "here"}},
                    {"delegate": {"name": "there", "namespace": "team"}},
                ],
            },
        )
    )
    assert parsed.is_root
    assert [(h.delegate.namespace, h.delegate.name) for h in parsed.http if h.delegate] == [
        ("shop", "here"),
        ("team", "there"),
    ]


@pytest.mark.parametrize(
    ("delegate", "field"),
    [
        ({"namespace": "team"}, "spec.http[0].delegate.name"),
        ({"name": "x", "namespace": "Not_A_Namespace"}, "spec.http[0].delegate.namespace"),
    ],
)
def test_delegate_reference_is_checked(delegate: Raw, field: str) -> None:
    err = rejected(vs("web", "shop", {"hosts": ["web"], "http": [{"delegate": delegate}]}))
    assert err.field == field


def test_a_route_with_nothing_to_do_names_delegate_as_an_option() -> None:
    err = rejected(vs("web", "shop", {"hosts": ["web"], "http": [{"timeout": "1s"}]}))
    assert err.field == "spec.http[0]"
    assert "delegate" in err.message


# --- stringMatchConflict / hasConflict -------------------------------------------------------


@pytest.mark.parametrize(
    ("root", "sub", "conflict"),
    [
        (None, exact("/x"), False),  # unset on either side never conflicts
        (prefix("/api"), None, False),
        (prefix("/api"), prefix("/api/v2"), False),  # prefixes nest
        (prefix("/api"), prefix("/ap"), True),  # a wider prefix is not within
        (prefix("/api"), exact("/api/items"), False),
        (prefix("/api"), exact("/other"), True),
        (exact("/api"), exact("/api"), False),
        (exact("/api"), exact("/api/v2"), True),
        (exact("/api"), prefix("/api"), True),  # a prefix under an exact is wider
        (regex("/a.*"), exact("/a"), True),  # regex on either side takes nothing else
        (exact("/a"), regex("/a.*"), True),
        (regex("/a.*"), regex("/a.*"), True),
        (StringMatch("", ""), exact("x"), True),  # `{}` (present) vs a value, as istiod
    ],
)
def test_string_match_conflict(
    root: StringMatch | None, sub: StringMatch | None, conflict: bool
) -> None:
    assert string_match_conflict(root, sub) is conflict


@pytest.mark.parametrize(
    ("root", "sub", "reason"),
    [
        (HTTPMatch(uri=prefix("/api")), HTTPMatch(uri=prefix("/other")), "uri prefix '/other'"),
        (HTTPMatch(method=exact("GET")), HTTPMatch(method=exact("POST")), "method"),
        (
            HTTPMatch(headers=(("x-user", exact("a")),)),
            HTTPMatch(headers=(("x-user", exact("b")),)),
            "header 'x-user'",
        ),
        (
            HTTPMatch(headers=(("x-user", None),)),
            HTTPMatch(headers=(("x-user", exact("b")),)),
            "header 'x-user'",
        ),
        (
            HTTPMatch(query_params=(("v", exact("1")),)),
            HTTPMatch(query_params=(("v", exact("2")),)),
            "query parameter 'v'",
        ),
        (HTTPMatch(ignore_uri_case=True), HTTPMatch(), "ignoreUriCase"),
        (HTTPMatch(port=80), HTTPMatch(port=8080), "port 8080"),
        (HTTPMatch(source_namespace="a"), HTTPMatch(), "sourceNamespace"),
        (HTTPMatch(source_labels={"app": "a"}), HTTPMatch(source_labels={"app": "b"}), "app"),
        (HTTPMatch(gateways=("mesh",)), HTTPMatch(gateways=("ns/gw",)), "gateways"),
    ],
)
def test_match_conflicts_name_the_condition(root: HTTPMatch, sub: HTTPMatch, reason: str) -> None:
    assert reason in match_conflict(root, sub)


def test_compatible_conditions_do_not_conflict() -> None:
    root = HTTPMatch(
        uri=prefix("/api"),
        headers=(("x-user", exact("a")),),
        port=80,
        source_labels={"app": "a"},
        gateways=("mesh", "ns/gw"),
    )
    sub = HTTPMatch(
        uri=exact("/api/items"),
        headers=(("x-user", exact("a")), ("x-other", prefix("b"))),
        port=80,
        source_labels={"app": "a", "version": "v1"},
        gateways=("ns/gw",),
    )
    assert match_conflict(root, sub) == ""


# --- mergeHTTPMatchRequests ------------------------------------------------------------------


def test_a_catch_all_root_keeps_the_delegate_matches() -> None:
    sub = (HTTPMatch(uri=prefix("/v1")),)
    assert merge_match_requests((), sub) == (sub, "")


def test_a_delegate_route_without_matches_takes_the_roots() -> None:
    root = (HTTPMatch(name="r", uri=prefix("/api"), port=8080),)
    assert merge_match_requests(root, ()) == (root, "")


def test_merged_match_takes_the_delegate_value_else_the_roots() -> None:
    root = HTTPMatch(
        name="root",
        uri=prefix("/productpage"),
        authority=exact("productpage.com"),
        headers=(("header", exact("h1")),),
        port=8080,
    )
    subs = (
        HTTPMatch(name="one", uri=exact("/productpage/v1")),
        HTTPMatch(uri=exact("/productpage/v2"), headers=(("header-2", exact("h2")),)),
    )
    merged, reason = merge_match_requests((root,), subs)
    assert reason == ""
    assert merged == (
        HTTPMatch(
            name="root-one",
            uri=exact("/productpage/v1"),
            authority=exact("productpage.com"),
            headers=(("header", exact("h1")),),
            port=8080,
        ),
        HTTPMatch(
            name="root",
            uri=exact("/productpage/v2"),
            authority=exact("productpage.com"),
            headers=(("header", exact("h1")), ("header-2", exact("h2"))),
            port=8080,
        ),
    )


def test_each_delegate_match_combines_with_every_root_match_it_fits() -> None:
    roots = (HTTPMatch(uri=prefix("/a")), HTTPMatch(uri=prefix("/b")), HTTPMatch(port=81))
    subs = (HTTPMatch(uri=exact("/a/1")), HTTPMatch(uri=exact("/b/1")))
    merged, _ = merge_match_requests(roots, subs)
    # Delegate match outer, root match inner; the port-only root match fits both.
    assert merged is not None
    assert [(m.uri, m.port) for m in merged] == [
        (exact("/a/1"), None),
        (exact("/a/1"), 81),
        (exact("/b/1"), None),
        (exact("/b/1"), 81),
    ]


def test_one_delegate_match_that_fits_no_root_match_drops_the_route() -> None:
    roots = (HTTPMatch(uri=prefix("/productpage")),)
    subs = (HTTPMatch(uri=exact("/productpage/v1")), HTTPMatch(uri=exact("/reviews")))
    merged, reason = merge_match_requests(roots, subs)
    assert merged is None
    assert "'/reviews'" in reason


def test_source_labels_are_united() -> None:
    root = HTTPMatch(source_labels={"app": "a"}, source_namespace="shop")
    sub = HTTPMatch(source_labels={"version": "v1"}, source_namespace="shop")
    merged, _ = merge_match_requests((root,), (sub,))
    assert merged is not None
    assert merged[0].source_labels == {"app": "a", "version": "v1"}
    assert merged[0].source_namespace == "shop"


# --- mergeHTTPRoute --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("root", "sub", "name"),
    [("api", "v2", "api-v2"), ("api", "", "api"), ("", "v2", "v2"), ("", "", "")],
)
def test_route_names_join_root_and_delegate(root: str, sub: str, name: str) -> None:
    merged, _ = merge_http_route(HTTPRoute(name=root), leaf(sub))
    assert merged is not None and merged.name == name


def test_root_policies_fill_in_what_the_delegate_leaves_unset() -> None:
    headers = Headers(request=HeaderOperations(set={"x-root": "yes"}))
    root = HTTPRoute(timeout=5.0, retries=Retries(attempts=3), headers=headers)
    merged, _ = merge_http_route(root, leaf("v1", timeout=1.0))
    assert merged is not None
    assert merged.timeout == 1.0  # the delegate's own
    assert merged.retries == Retries(attempts=3)  # the root's
    assert merged.headers == headers
    assert merged.route == leaf().route and merged.delegate is None


def test_mirror_mirror_percentage_and_mirrors_are_filled_in_separately() -> None:
    shadow = Destination("shadow.shop.svc.cluster.local")
    extra = Destination("extra.team.svc.cluster.local")
    root = HTTPRoute(mirrors=(Mirror(shadow, 100.0, single=True),), mirror_percentage=None)
    sub = leaf("v1", mirrors=(Mirror(extra, 20.0),), mirror_percentage=None)
    merged, _ = merge_http_route(root, sub)
    assert merged is not None
    assert merged.mirrors == (Mirror(shadow, 100.0, single=True), Mirror(extra, 20.0))
    # The delegate's `mirror` with the root's `mirrorPercentage`.
    root = HTTPRoute(mirror_percentage=5.0)
    merged, _ = merge_http_route(root, leaf(mirrors=(Mirror(extra, 100.0, single=True),)))
    assert merged is not None and merged.mirrors == (Mirror(extra, 5.0, single=True),)


def test_merge_http_routes_keeps_the_delegate_order_and_drops_conflicts() -> None:
    root = HTTPRoute(name="api", match=(HTTPMatch(uri=prefix("/api")),))
    subs = [
        leaf("v2", HTTPMatch(uri=prefix("/api/v2"))),
        leaf("other", HTTPMatch(uri=prefix("/other"))),
        leaf("rest"),
    ]
    merged = merge_http_routes(root, subs)
    assert [(r.name, [m.uri for m in r.match]) for r in merged] == [
        ("api-v2", [prefix("/api/v2")]),
        ("api-rest", [prefix("/api")]),
    ]


# --- PushContext: merged once per push, warnings on the root ---------------------------------


ROOT = vs(
    "web",
    "shop",
    {
        "hosts": ["web"],
        "http": [
            {
                "name": "api",
                "match": [{"uri": {"prefix": "/api"}}],
                "timeout": "5s",
                "delegate": {"name": "api-routes", "namespace": "team"},
            },
            {"name": "default", "route": to("web")},
        ],
    },
)


def delegate(export_to: list[str] | None = None, **extra: Any) -> Raw:
    spec: Raw = {
        "http": [
            {"name": "v2", "match": [{"uri": {"prefix": "/api/v2"}}], "route": to("api", "v2")},
            {"name": "v1", "route": to("api", "v1")},
        ],
        **extra,
    }
    if export_to is not None:
        spec["exportTo"] = export_to
    return vs("api-routes", "team", spec)


def warnings_of(ctx: Any) -> list[tuple[str, str, str]]:
    return [
        (w.object, w.field, w.message)
        for w in ctx.reference_warnings()
        if w.object.startswith("VirtualService")
    ]


def test_the_root_routes_with_the_delegate_routes_in_place() -> None:
    ctx = context(service("web", "shop"), service("api", "team"), ROOT, delegate())
    root = ctx.virtual_service("web.shop.svc.cluster.local", "shop")
    assert root is not None
    assert [(h.name, h.timeout) for h in root.http] == [
        ("api-v2", 5.0),
        ("api-v1", 5.0),
        ("default", None),
    ]
    # The delegate's short host is its own namespace's service, not the root's.
    assert root.http[0].route[0].destination.host == "api.team.svc.cluster.local"
    assert root.http[2].route[0].destination.host == "web"
    # A delegate routes nothing by itself.
    assert all(not v.is_delegate for v in ctx.mesh_virtual_services("shop"))
    assert warnings_of(ctx) == [
        (
            "VirtualService team/api-routes",
            f"spec.http[{i}].route[0].destination.subset",
            f"subset {s!r} is not defined by a DestinationRule for api.team.svc.cluster.local; "
            "requests routed to it fail with 503",
        )
        for i, s in ((0, "v2"), (1, "v1"))
    ]


def test_sidecar_routes_come_from_the_merged_root() -> None:
    ctx = context(service("web", "shop"), service("api", "team"), ROOT, delegate())
    config = routes(ctx, sidecar("shop"))["80"]
    [vhost] = [vh for vh in config.virtual_hosts if vh.name == "web.shop.svc.cluster.local:80"]
    assert [(r.name, r.match.prefix, r.route.cluster) for r in vhost.routes] == [
        ("api-v2", "/api/v2", "outbound|80|v2|api.team.svc.cluster.local"),
        ("api-v1", "/api", "outbound|80|v1|api.team.svc.cluster.local"),
        ("default", "/", "outbound|80||web.shop.svc.cluster.local"),
    ]


def test_a_missing_delegate_is_a_warning_and_only_its_route_is_dropped() -> None:
    ctx = context(service("web", "shop"), ROOT)
    root = ctx.virtual_service("web.shop.svc.cluster.local", "shop")
    assert root is not None and [h.name for h in root.http] == ["default"]
    assert warnings_of(ctx) == [
        (
            "VirtualService shop/web",
            "spec.http[0].delegate",
            "VirtualService team/api-routes not found; this route is left out",
        )
    ]


def test_a_delegate_not_exported_to_the_roots_namespace_is_not_used() -> None:
    ctx = context(service("web", "shop"), ROOT, delegate(["."]))
    root = ctx.virtual_service("web.shop.svc.cluster.local", "shop")
    assert root is not None and [h.name for h in root.http] == ["default"]
    [(_, field, message)] = [w for w in warnings_of(ctx) if w[0] == "VirtualService shop/web"]
    assert field == "spec.http[0].delegate"
    assert "not exported to namespace 'shop'" in message
    # Exported by name works.
    ctx = context(service("web", "shop"), ROOT, delegate(["shop"]))
    root = ctx.virtual_service("web.shop.svc.cluster.local", "shop")
    assert root is not None and len(root.http) == 3


def test_a_virtual_service_with_hosts_is_no_delegate() -> None:
    other = vs("api-routes", "team", {"hosts": ["api"], "http": [{"route": to("api")}]})
    ctx = context(service("web", "shop"), ROOT, other)
    [(obj, field, message)] = [w for w in warnings_of(ctx) if w[0] == "VirtualService shop/web"]
    assert (obj, field) == ("VirtualService shop/web", "spec.http[0].delegate")
    assert "has hosts, so it is not a delegate" in message
    # It still routes its own host.
    assert ctx.virtual_service("api.team.svc.cluster.local", "team") is not None


def test_a_conflicting_delegate_route_is_dropped_with_a_warning() -> None:
    conflicting = vs(
        "api-routes",
        "team",
        {
            "http": [
                {"name": "other", "match": [{"uri": {"prefix": "/other"}}], "route": to("api")},
                {"route": to("api")},
            ]
        },
    )
    ctx = context(service("web", "shop"), ROOT, conflicting)
    root = ctx.virtual_service("web.shop.svc.cluster.local", "shop")
    assert root is not None and [h.name for h in root.http] == ["api", "default"]
    assert warnings_of(ctx) == [
        (
            "VirtualService shop/web",
            "spec.http[0].delegate",
            "route spec.http[0] ('other') of delegate VirtualService team/api-routes conflicts "
            "with this route's match (uri prefix '/other' is not within the root's prefix "
            "'/api'); that route is left out",
        )
    ]


def test_one_delegate_serves_several_roots() -> None:
    second = vs(
        "shop-api",
        "shop",
        {
            "hosts": ["api.example.com"],
            "http": [{"name": "all", "delegate": {"name": "api-routes", "namespace": "team"}}],
        },
    )
    ctx = context(service("web", "shop"), ROOT, second, delegate())
    first = ctx.virtual_service("web.shop.svc.cluster.local", "shop")
    other = ctx.virtual_service("api.example.com", "shop")
    assert first is not None and other is not None
    assert [h.name for h in first.http] == ["api-v2", "api-v1", "default"]
    assert [h.name for h in other.http] == ["all-v2", "all-v1"]
    assert [m.uri for m in other.http[0].match] == [prefix("/api/v2")]
