"""Gateway API cost against the equivalent Istio config, in the same run: N HTTPRoutes over G
Gateways (route i on gateway i % G, path /r<i>/, its own Service) versus G Istio Gateways + N
VirtualServices routing the same hosts and paths to the same Services.

    .venv/bin/python -m bench.gateway_api                        # 1,000 routes, 50 Gateways
    .venv/bin/python -m bench.gateway_api --routes 200 --gateways 10 --no-envoy

In-process (CPU time, median of --rounds): the startup push (PushContext build, which for the
Gateway API includes the conversion into the internal Istio form), generating every type for one
router proxy per Gateway, and one route change (push decision + regeneration for every router).
Then, with a real `istiolite serve` and a router Envoy for one Gateway, the wall time from
rewriting one HTTPRoute file to Envoy's route config holding the new path (median of --changes).
Printed as Markdown; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from istiolite import type_urls
from istiolite.model.kinds import parse_object
from istiolite.model.proxy import Proxy, parse_proxy
from istiolite.model.store import ConfigStore
from istiolite.networking.generator import ConfigGenerator
from istiolite.push.cache import ResourceCache
from istiolite.push.context import PushContext
from istiolite.push.pusher import Pusher
from istiolite.push.request import PushRequest

DOMAIN = "cluster.local"
NAMESPACES = 10
GATEWAY_NS = "gw"
LABEL = "gateway.networking.k8s.io/gateway-name"


def _ns(i: int) -> str:
    return f"ns-{i % NAMESPACES}"


def _service(i: int) -> list[dict[str, Any]]:
    name, ns = f"svc-{i}", _ns(i)
    ip = f"10.{128 + i // 65536}.{i // 256 % 256}.{i % 256}"
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "clusterIP": f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}",
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-abc",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
        },
    ]


def _host(g: int) -> str:
    return f"gw-{g}.example.com"


def gateway_api_gateway(g: int, port: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": f"gw-{g}", "namespace": GATEWAY_NS},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {
                    "name": "http",
                    "port": port,
                    "protocol": "HTTP",
                    "hostname": _host(g),
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }


def http_route(i: int, gateways: int, version: int = 0) -> dict[str, Any]:
    suffix = f"v{version}/" if version else ""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": f"route-{i}", "namespace": _ns(i)},
        "spec": {
            "parentRefs": [{"name": f"gw-{i % gateways}", "namespace": GATEWAY_NS}],
            "hostnames": [_host(i % gateways)],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": f"/r{i}/{suffix}"}}],
                    "backendRefs": [{"name": f"svc-{i}", "port": 80}],
                }
            ],
        },
    }


def istio_gateway(g: int, port: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": f"gw-{g}", "namespace": GATEWAY_NS},
        "spec": {
            "selector": {LABEL: f"gw-{g}"},
            "servers": [
                {"port": {"number": port, "name": "http", "protocol": "HTTP"}, "hosts": [_host(g)]}
            ],
        },
    }


def virtual_service(i: int, gateways: int, version: int = 0) -> dict[str, Any]:
    suffix = f"v{version}/" if version else ""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": f"route-{i}", "namespace": _ns(i)},
        "spec": {
            "hosts": [_host(i % gateways)],
            "gateways": [f"{GATEWAY_NS}/gw-{i % gateways}"],
            "http": [
                {
                    "match": [{"uri": {"prefix": f"/r{i}/{suffix}"}}],
                    "route": [{"destination": {"host": f"svc-{i}.{_ns(i)}.svc.{DOMAIN}"}}],
                }
            ],
        },
    }


FORMS: dict[str, tuple[Callable[..., dict[str, Any]], Callable[..., dict[str, Any]]]] = {
    "Gateway API (Gateway + HTTPRoute)": (gateway_api_gateway, http_route),
    "Istio (Gateway + VirtualService)": (istio_gateway, virtual_service),
}


def _routers(gateways: int) -> list[Proxy]:
    return [
        parse_proxy(
            f"router~10.200.0.{g + 1}~gw-{g}-1.{GATEWAY_NS}~{GATEWAY_NS}.svc.{DOMAIN}",
            {"NAMESPACE": GATEWAY_NS, "LABELS": {LABEL: f"gw-{g}"}},
        )
        for g in range(gateways)
    ]


def measure_form(form: str, routes: int, gateways: int, rounds: int) -> dict[str, float]:
    make_gateway, make_route = FORMS[form]
    store = ConfigStore()
    for i in range(routes):
        store.replace_source(f"svc-{i}", dict(parse_object(r) for r in _service(i)))
    for g in range(gateways):
        store.replace_source(f"gw-{g}", dict([parse_object(make_gateway(g))]))
    for i in range(routes):
        store.replace_source(f"route-{i}", dict([parse_object(make_route(i, gateways))]))
    cache = ResourceCache()
    generator = ConfigGenerator(cache)
    published: list[tuple[PushContext, PushRequest]] = []
    pusher = Pusher(store, cache, domain=DOMAIN, publish=lambda c, r: published.append((c, r)))
    proxies = _routers(gateways)
    routes_served = 0

    def serve_all() -> None:
        nonlocal routes_served
        ctx = published[-1][0]
        routes_served = 0
        for proxy in proxies:
            for type_url in type_urls.PUSH_ORDER:
                out = generator(ctx, proxy, type_url)
                if type_url == type_urls.ROUTE:
                    for resource in out.values():
                        config = RouteConfiguration.FromString(resource.payload)
                        routes_served += sum(len(vh.routes) for vh in config.virtual_hosts)

    started = time.process_time()
    pusher.start()
    startup = time.process_time() - started
    started = time.process_time()
    serve_all()
    first_serve = time.process_time() - started
    push, serve = [], []
    for r in range(rounds):
        i = (r * 37) % routes
        changed = store.replace_source(
            f"route-{i}", dict([parse_object(make_route(i, gateways, version=r + 1))])
        )
        started = time.process_time()
        pusher.push([(time.monotonic(), changed)])
        push.append(time.process_time() - started)
        started = time.process_time()
        serve_all()
        serve.append(time.process_time() - started)
    return {
        "startup": startup,
        "first_serve": first_serve,
        "push": statistics.median(push),
        "serve": statistics.median(serve),
        "routes": routes_served,
    }


def _serves(envoy: Any, path: str) -> bool:
    dump = envoy.config_dump("dynamic_route_configs")
    return f'"prefix": "{path}"' in json.dumps(dump)


def measure_envoy(form: str, routes: int, gateways: int, changes: int) -> list[float]:
    """Wall seconds from rewriting one route file (an HTTPRoute or a VirtualService, by `form`)
    to gw-0's Envoy serving its new path."""
    from tests.support.net import free_port
    from tests.support.processes import IstioliteProcess, gateway_envoy, stop_all

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "config"
        config.mkdir()
        port = free_port()
        (config / "services.yaml").write_text(
            yaml.safe_dump_all([o for i in range(routes) for o in _service(i)])
        )
        make_gateway, make_route = FORMS[form]
        (config / "gateways.yaml").write_text(
            yaml.safe_dump_all([make_gateway(g, port) for g in range(gateways)])
        )
        for i in range(routes):
            (config / f"route-{i}.yaml").write_text(yaml.safe_dump(make_route(i, gateways)))
        cp = envoy = None
        took = []
        try:
            cp = IstioliteProcess([config], work, "--dev-plaintext-sds")
            envoy = gateway_envoy(
                cp, work, namespace=GATEWAY_NS, labels={LABEL: "gw-0"}, delta=True, pod="gw-0-1"
            )
            for n in range(1, changes + 1):
                i = gateways * (n % max(1, routes // gateways))  # a route of gw-0
                want = f"/r{i}/v{n}/"
                started = time.monotonic()
                (config / f"route-{i}.yaml").write_text(
                    yaml.safe_dump(make_route(i, gateways, version=n))
                )
                deadline = started + 30
                while not _serves(envoy, want):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{want} did not reach Envoy in 30 s")
                    time.sleep(0.005)
                took.append(time.monotonic() - started)
                time.sleep(0.2)  # let the watcher settle before the next change
        finally:
            stop_all(envoy, cp)
        return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--gateways", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--no-envoy", action="store_true", help="skip the real-Envoy part")
    args = parser.parse_args()
    results = {f: measure_form(f, args.routes, args.gateways, args.rounds) for f in FORMS}
    print(
        f"\n{args.routes} routes over {args.gateways} Gateways, one router proxy per Gateway, "
        f"CPU ms (route changes: median of {args.rounds})\n"
    )
    print(
        "| form | startup push | first serve, all routers | one route change: push | "
        "its serve, all routers | Envoy routes |"
    )
    print("|---|---|---|---|---|---|")
    for form, r in results.items():
        print(
            f"| {form} | {r['startup'] * 1000:.1f} | {r['first_serve'] * 1000:.1f} | "
            f"{r['push'] * 1000:.1f} | {r['serve'] * 1000:.1f} | {r['routes']:.0f} |"
        )
    gw, istio = results.values()
    print(
        "| ratio Gateway API / Istio | "
        + " | ".join(
            f"{gw[k] / istio[k]:.2f}x" if istio[k] else "-"
            for k in ("startup", "first_serve", "push", "serve")
        )
        + " | |"
    )
    if not args.no_envoy:
        print(
            f"\nA route file rewritten -> the router Envoy serves the new path ({args.changes}):\n"
        )
        print("| form | median | max |")
        print("|---|---|---|")
        for form in FORMS:
            took = measure_envoy(form, args.routes, args.gateways, args.changes)
            print(
                f"| {form} | {statistics.median(took) * 1000:.0f} ms | {max(took) * 1000:.0f} ms |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
