"""In-process cost of one push, step by step, on a Kubernetes-shaped mesh: Services with Pods
behind EndpointSlices (targetRefs, so Pod labels and subsets matter), a DestinationRule with
subsets per tenth service, and a few proxy shapes served after every push as the ADS server would.

    .venv/bin/python -m bench.push_pipeline                      # 1,000 services, 10,000 pods
    .venv/bin/python -m bench.push_pipeline --services 200 --pods-per-service 5 --rounds 20

Per kind of change (an EndpointSlice, a Pod's labels, a new Service), the median CPU time of:
store snapshot + PushContext build, cache advance + decision, warnings, and regenerating every
type for the connected proxy shapes; and how many cache entries the change dropped. Printed as a
Markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

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


def _ns(i: int) -> str:
    return f"ns-{i % NAMESPACES}"


def _pod_ip(i: int, p: int, per: int) -> str:
    n = i * per + p
    return f"10.{128 + n // 65536}.{n // 256 % 256}.{n % 256}"


def service_objects(i: int, per: int, version: int = 0) -> list[dict[str, Any]]:
    """Service svc-i, its `per` Pods (label version v1/v2) and one EndpointSlice naming them."""
    ns, name = _ns(i), f"svc-{i}"
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{p}",
                "namespace": ns,
                "labels": {"app": name, "version": f"v{1 + (p + version) % 2}"},
            },
            "spec": {"nodeName": f"node-{p % 3}", "serviceAccountName": name},
            "status": {"podIP": _pod_ip(i, p, per)},
        }
        for p in range(per)
    ]
    out: list[dict[str, Any]] = [
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
        *pods,
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
            "endpoints": [
                {
                    "addresses": [_pod_ip(i, p, per)],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": f"{name}-{p}", "namespace": ns},
                }
                for p in range(per)
            ],
        },
    ]
    if i % 10 == 0:
        out.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "host": name,
                    "subsets": [
                        {"name": "v1", "labels": {"version": "v1"}},
                        {"name": "v2", "labels": {"version": "v2"}},
                    ],
                },
            }
        )
    return out


def _parsed(raws: list[dict[str, Any]]) -> dict[Any, Any]:
    return dict(parse_object(raw) for raw in raws)


def _proxies(shapes: int) -> list[Proxy]:
    out = []
    for n in range(shapes):
        ns = _ns(n)
        out.append(
            parse_proxy(
                f"sidecar~10.200.0.{n + 1}~client-{n}.{ns}~{ns}.svc.{DOMAIN}",
                {"NAMESPACE": ns, "LABELS": {"app": f"client-{n}"}},
            )
        )
    return out


def measure(services: int, per: int, shapes: int, rounds: int) -> dict[str, dict[str, float]]:
    store = ConfigStore()
    for i in range(services):
        store.replace_source(f"svc-{i}", _parsed(service_objects(i, per)))
    cache = ResourceCache()
    generator = ConfigGenerator(cache)
    proxies = _proxies(shapes)
    published: list[tuple[PushContext, PushRequest]] = []
    pusher = Pusher(store, cache, domain=DOMAIN, publish=lambda c, r: published.append((c, r)))
    pusher.start()

    def serve_all() -> None:
        ctx = published[-1][0]
        for proxy in proxies:
            for type_url in type_urls.PUSH_ORDER:
                generator(ctx, proxy, type_url)

    serve_all()
    results: dict[str, dict[str, float]] = {}

    def scenario(name: str, change: Callable[[int], Any]) -> None:
        steps: dict[str, list[float]] = {"push": [], "serve": [], "dropped": [], "full": []}
        for r in range(rounds):
            changes = change(r)
            started = time.process_time()
            request = pusher.push([(time.monotonic(), changes)])
            steps["push"].append(time.process_time() - started)
            started = time.process_time()
            serve_all()
            steps["serve"].append(time.process_time() - started)
            steps["dropped"].append(sum(pusher.status.get("dropped", {}).values()))
            steps["full"].append(1.0 if request.full else 0.0)
        results[name] = {k: statistics.median(v) for k, v in steps.items()}
        results[name]["entries"] = len(cache)

    def endpoint_change(r: int) -> Any:
        i = 1 + r % (services - 1)
        raws = service_objects(i, per)
        raws[-1 if i % 10 else -2]["endpoints"][0]["conditions"]["ready"] = r % 2 == 1
        return store.replace_source(f"svc-{i}", _parsed(raws))

    def pod_label_change(r: int) -> Any:
        i = 10 * (1 + r % max(1, services // 10 - 1))  # a service with subsets
        return store.replace_source(f"svc-{i}", _parsed(service_objects(i, per, version=r + 1)))

    def service_add(r: int) -> Any:
        i = services + r
        return store.replace_source(f"svc-{i}", _parsed(service_objects(i, per)))

    scenario("EndpointSlice change", endpoint_change)
    scenario("Pod label change", pod_label_change)
    scenario("Service added", service_add)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--pods-per-service", type=int, default=10)
    parser.add_argument("--shapes", type=int, default=10, help="proxy shapes served per push")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    results = measure(args.services, args.pods_per_service, args.shapes, args.rounds)
    print(
        f"\n{args.services} services x {args.pods_per_service} pods, "
        f"{args.shapes} proxy shapes, median of {args.rounds} rounds (CPU ms)\n"
    )
    print("| change | push (Pusher) | serve all shapes | entries dropped | full | cache entries |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['push'] * 1000:.1f} | {r['serve'] * 1000:.1f} | "
            f"{r['dropped']:.0f} | {'yes' if r['full'] else 'no'} | {r['entries']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
