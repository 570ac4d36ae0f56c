"""The conversion into Istio Gateways and VirtualServices: which proxies a Gateway configures,
hostname intersection, the spec's precedence across routes, mesh (GAMMA) producer and consumer
routes, backends that do not resolve."""

from __future__ import annotations

from typing import Any

import yaml

from istiolite.model.gatewayapi.attach import intersect_hostnames
from istiolite.model.kinds import parse_object
from istiolite.model.virtualservice import VirtualService
from istiolite.push.context import PushContext

BASE = """
apiVersion: v1
kind: Service
metadata: {name: a, namespace: web}
spec: {clusterIP: 10.96.0.1, selector: {app: a}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: web}
spec: {clusterIP: 10.96.0.2, selector: {app: b}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: edge-lb, namespace: infra}
spec: {clusterIP: 10.96.0.3, selector: {app: edge-proxy}, ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: web}
spec:
  gatewayClassName: istiolite
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}
"""


def _ctx(extra: str) -> PushContext:
    objects: dict[Any, Any] = {}
    for doc in yaml.safe_load_all(BASE + "---\n" + extra):
        if doc:
            key, obj = parse_object(doc)
            objects[key] = obj
    return PushContext(objects, domain="cluster.local", version="t")


def _route(name: str, rules: str, created: str = "", hostnames: str = "[]") -> str:
    ts = f", creationTimestamp: '{created}'" if created else ""
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: web{ts}}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: {hostnames}
  rules: {rules}
"""


def _gateway_vs(ctx: PushContext) -> list[VirtualService]:
    return [vs for vs in ctx.gateway_api.virtual_services if "mesh" not in vs.gateways]


def test_hostname_intersection() -> None:
    assert intersect_hostnames("", ()) == ("*",)
    assert intersect_hostnames("*.example.com", ()) == ("*.example.com",)
    assert intersect_hostnames("", ("a.example.com",)) == ("a.example.com",)
    assert intersect_hostnames("*.example.com", ("a.example.com", "a.example.org")) == (
        "a.example.com",
    )
    # A wildcard route hostname narrowed to the listener's specific one, and the reverse.
    assert intersect_hostnames("a.example.com", ("*.example.com",)) == ("a.example.com",)
    assert intersect_hostnames("*.example.com", ("*.b.example.com",)) == ("*.b.example.com",)
    assert intersect_hostnames("*.example.com", ("example.com",)) == ()


def test_gateway_selects_its_named_proxies_in_its_namespace() -> None:
    ctx = _ctx("")
    (gateway,) = ctx.gateway_api.gateways
    label = {"gateway.networking.k8s.io/gateway-name": "edge"}
    assert ctx.gateways_for(label, "web") == (gateway,)
    assert ctx.gateways_for(label, "other") == ()
    assert ctx.gateways_for({"app": "x"}, "web") == ()


def test_gateway_with_a_service_address_selects_that_services_proxies() -> None:
    ctx = _ctx("""---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shared, namespace: web}
spec:
  gatewayClassName: istio
  addresses: [{type: Hostname, value: edge-lb.infra.svc.cluster.local}]
  listeners: [{name: http, port: 8080, protocol: HTTP}]
""")
    shared = [g for g in ctx.gateway_api.gateways if "shared" in g.meta.name]
    assert ctx.gateways_for({"app": "edge-proxy"}, "infra") == tuple(shared)


def test_precedence_across_routes_exact_then_longest_then_oldest() -> None:
    older = _route(
        "older",
        "[{matches: [{path: {type: PathPrefix, value: /}}], backendRefs: [{name: a, port: 80}]}]",
        created="2024-01-01T00:00:00Z",
        hostnames="[a.example.com]",
    )
    newer = _route(
        "newer",
        "[{matches: [{path: {type: PathPrefix, value: /api}}, "
        "{path: {type: Exact, value: /api/v1}}, {path: {type: PathPrefix, value: /}, "
        "headers: [{name: x, value: y}]}], backendRefs: [{name: b, port: 80}]}]",
        created="2025-01-01T00:00:00Z",
        hostnames="[a.example.com]",
    )
    (vs,) = _gateway_vs(_ctx(older + newer))
    assert vs.hosts == ("a.example.com",)
    order = [
        (m.uri.kind if m.uri else "", m.uri.value if m.uri else "", len(m.headers), h.name)
        for h in vs.http
        for m in h.match
    ]
    assert order == [
        ("exact", "/api/v1", 0, "web.newer.0"),
        ("exact", "/api", 0, "web.newer.0"),
        ("prefix", "/api/", 0, "web.newer.0"),
        # Same path "/": the one with a header match first, then the older route.
        ("prefix", "/", 1, "web.newer.0"),
        ("prefix", "/", 0, "web.older.0"),
    ]


def test_backend_not_found_answers_500_and_weights_carry_over() -> None:
    ctx = _ctx(
        _route(
            "r",
            "[{backendRefs: [{name: a, port: 80, weight: 7}, {name: b, port: 80, "
            "weight: 3}]}, {matches: [{path: {value: /gone}}], "
            "backendRefs: [{name: nope, port: 80}]}]",
        )
    )
    (vs,) = _gateway_vs(ctx)
    assert vs.hosts == ("*.example.com",)
    by_name = {(h.name, h.match[0].uri.value if h.match[0].uri else ""): h for h in vs.http}
    weighted = by_name[("web.r.0", "/")]
    assert [(d.destination.host, d.weight) for d in weighted.route] == [
        ("a.web.svc.cluster.local", 7),
        ("b.web.svc.cluster.local", 3),
    ]
    gone = by_name[("web.r.1", "/gone")]
    assert gone.direct_response is not None and gone.direct_response.status == 500


GRANT = """---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: client-routes, namespace: web}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: client}]
  to: [{group: "", kind: Service}]
"""


def test_mesh_route_producer_and_consumer() -> None:
    ctx = _ctx(
        GRANT
        + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: producer, namespace: web}
spec:
  parentRefs: [{kind: Service, group: "", name: a}]
  rules: [{backendRefs: [{name: a, port: 80, weight: 90}, {name: b, port: 80, weight: 10}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: client}
spec:
  parentRefs: [{kind: Service, group: "", name: a, namespace: web}]
  rules: [{backendRefs: [{name: b, namespace: web, port: 80}]}]
"""
    )
    host = "a.web.svc.cluster.local"
    producer = ctx.virtual_service(host, "web")
    consumer = ctx.virtual_service(host, "client")
    assert producer is not None and consumer is not None
    assert [d.weight for d in producer.http[0].route] == [90, 10]
    assert consumer.export_to == ("client",)
    assert consumer.http[0].route[0].destination.host == "b.web.svc.cluster.local"
    assert ctx.virtual_service(host, "elsewhere") is producer


def test_cross_namespace_backend_needs_a_reference_grant() -> None:
    route = """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: client}
spec:
  parentRefs: [{kind: Service, group: "", name: a, namespace: web}]
  rules: [{backendRefs: [{name: b, namespace: web, port: 80}]}]
"""
    consumer = _ctx(route).virtual_service("a.web.svc.cluster.local", "client")
    assert consumer is not None and consumer.http[0].direct_response is not None
    assert consumer.http[0].direct_response.status == 500


def test_retry_maps_as_istiod_does() -> None:
    ctx = _ctx(
        _route(
            "r",
            "[{matches: [{path: {value: /a/}}], backendRefs: [{name: a, port: 80}], "
            "retry: {attempts: 3, codes: [500, 503], backoff: 100ms}, "
            "timeouts: {backendRequest: 2s}}, "
            "{matches: [{path: {value: /b/}}], backendRefs: [{name: a, port: 80}], "
            "retry: {attempts: 0}}, "
            "{matches: [{path: {value: /c/}}], backendRefs: [{name: a, port: 80}], "
            "timeouts: {request: 9s, backendRequest: 3s}}]",
        )
    )
    (vs,) = _gateway_vs(ctx)
    by_path = {h.match[0].uri.value: h for h in vs.http if h.match[0].uri is not None}
    retries = by_path["/a/"].retries
    assert retries is not None
    assert retries.attempts == 3 and retries.backoff == 0.1 and retries.per_try_timeout == 2.0
    assert retries.retry_on == "connect-failure,refused-stream,unavailable,cancelled,500,503"
    off = by_path["/b/"].retries
    assert off is not None and off.attempts == 0 and off.retry_on == ""
    # No retry stanza: the backend timeout bounds the request, Istio's default retries stay.
    assert by_path["/c/"].retries is None and by_path["/c/"].timeout == 3.0


def test_session_persistence_is_reported_not_dropped() -> None:
    ctx = _ctx(
        _route(
            "r",
            "[{backendRefs: [{name: a, port: 80}, {name: b, port: 80}], "
            "sessionPersistence: {sessionName: s, type: Cookie}}]",
        )
    )
    (vs,) = _gateway_vs(ctx)
    assert len(vs.http[0].route) == 2  # the route itself still works
    status = next(v for k, v in ctx.gateway_api_status().items() if k.kind == "HTTPRoute")
    (accepted,) = [c for c in status["parents"][0]["conditions"] if c["type"] == "Accepted"]
    assert accepted["status"] == "True"
    assert "spec.rules[0].sessionPersistence" in accepted["message"]
    warnings = [
        w for w in ctx.reference_warnings() if w.field == "spec.rules[0].sessionPersistence"
    ]
    assert warnings and warnings[0].unapplied
