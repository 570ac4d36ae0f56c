"""Benchmark: Kubernetes as the source.

Measures (1) `istiolite serve --kubeconfig` against the test API server holding N Services,
3N EndpointSlices and 10N Pods: time from process start to /ready (every informer listed) and
the process's RSS then and after a quiet period, with an empty cluster as the baseline;
(2) informer events decoded and applied into the store per second on one core (watch lines
→ orjson → parse/validate → store update), in-process, without the server in the way;
(3) time from an EndpointSlice write in the API server to a real Envoy having the endpoint
(polling Envoy's admin /clusters).

    .venv/bin/python -m bench.kube_informer [--services 1000] [--events 20000] [--writes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson

from istiolite import type_urls
from istiolite.logs import configure_logging
from istiolite.model.proxy import parse_proxy
from istiolite.model.store import ChangeSet, ConfigStore
from istiolite.networking.generator import ConfigGenerator
from istiolite.push.cache import ResourceCache
from istiolite.push.pusher import Pusher
from istiolite.sources.kube.informer import Batch, Informer
from istiolite.sources.kube.resources import WATCHED
from istiolite.sources.kube.source import KubeSource
from tests.support.kube_apiserver import KubeApiServer
from tests.support.processes import IstioliteProcess, http_get, sidecar_envoy, stop_all
from tests.support.wait import wait_for

NAMESPACES = 10
TARGET_PORT = 8080


def _ip(n: int) -> str:
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def service(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{i}", "namespace": f"ns-{i % NAMESPACES}"},
        "spec": {
            "selector": {"app": f"svc-{i}"},
            "ports": [{"name": "http", "port": 80, "targetPort": TARGET_PORT}],
        },
    }


def endpoint_slice(i: int, j: int, ip: str, version: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{i}-{j}",
            "namespace": f"ns-{i % NAMESPACES}",
            "labels": {"kubernetes.io/service-name": f"svc-{i}"},
            "resourceVersion": str(version),
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
    }


def pod(i: int, k: int, n: int, version: int = 0, label: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"svc-{i}-{k}",
            "namespace": f"ns-{i % NAMESPACES}",
            "labels": {"app": f"svc-{i}", "version": label},
            "resourceVersion": str(version),
        },
        "spec": {"serviceAccountName": "default", "containers": [{"name": "app"}]},
        "status": {"podIP": _ip(n)},
    }


def populate(server: KubeApiServer, services: int) -> None:
    for ns in range(NAMESPACES):
        server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{ns}"}})
    for i in range(services):
        server.put(service(i))
        for j in range(3):
            server.put(endpoint_slice(i, j, _ip(i * 3 + j)))
        for k in range(10):
            server.put(pod(i, k, 1_000_000 + i * 10 + k))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def initial_sync(services: int, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, count in (("empty", 0), ("full", services)):
        with KubeApiServer(bookmark_interval=5.0) as server:
            t = time.perf_counter()
            populate(server, count)
            fill = time.perf_counter() - t
            kubeconfig = server.write_kubeconfig(workdir / f"kubeconfig-{label}")
            started = time.perf_counter()
            cp = IstioliteProcess([], workdir, "--kubeconfig", str(kubeconfig))
            try:
                ready = time.perf_counter() - started
                synced = next(
                    (e for e in cp.log_events() if e.get("event") == "kubernetes synced"), {}
                )
                rss_ready = rss_kib(cp.proc.pid)
                time.sleep(5.0)
                out[label] = {
                    "objects": count * 14,
                    "server_fill_s": round(fill, 2),
                    "start_to_ready_s": round(ready, 2),
                    "informer_sync_s": synced.get("seconds"),
                    "rss_ready_mib": round(rss_ready / 1024, 1),
                    "rss_steady_mib": round(rss_kib(cp.proc.pid) / 1024, 1),
                }
            finally:
                stop_all(cp)
    return out


class _Stream:
    """A watch stream made of pre-encoded chunks (what the server would send)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    def close(self) -> None:
        pass


def _watch_bytes(events: Iterator[dict[str, Any]], chunk: int = 16 * 1024) -> list[bytes]:
    data = b"".join(orjson.dumps(e) + b"\n" for e in events)
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


async def _events_rate(kind: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """`events` of `kind` through one informer into a store that holds 1,000 Services, 3,000
    EndpointSlices and 10,000 Pods, then the one debounced push of the burst (with one
    sidecar's config cached, so the push decision is the live server's)."""
    store = ConfigStore()
    seeds = {"Service": seed_services, "EndpointSlice": seed_slices, "Pod": seed_pods}
    source = KubeSource(None, store, kinds=[WATCHED[k] for k in seeds])  # type: ignore[arg-type]
    informers: dict[str, Informer] = {}
    for name, objects in seeds.items():
        watched = WATCHED[name]

        def handler(batch: Batch, watched: Any = watched) -> None:
            source._apply(watched, informers[watched.kind], batch)

        informer = Informer(None, watched.resource(), handler)  # type: ignore[arg-type]
        informers[name] = source.informers[name] = informer
        informer._replace_all(
            {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects()}, "1"
        )
    cache = ResourceCache()
    pusher = Pusher(store, cache, domain="cluster.local", publish=lambda _c, _r: None)
    pusher.start()
    generator = ConfigGenerator(cache)
    proxy = parse_proxy("sidecar~10.9.9.9~client.ns-0~ns-0.svc.cluster.local", {})
    for type_url in type_urls.PUSH_ORDER:
        generator(pusher.context, proxy, type_url)
    changes: list[tuple[float, ChangeSet]] = []
    store.subscribe(lambda c: changes.append((time.monotonic(), c)))
    stream = _Stream(_watch_bytes(iter(events)))
    cpu = time.process_time()
    await informers[kind]._consume(stream, initial=False)  # type: ignore[arg-type]
    cpu = time.process_time() - cpu
    push_cpu = time.process_time()
    request = pusher.push(changes) if changes else None  # the one debounced push of the burst
    push_cpu = time.process_time() - push_cpu
    return {
        "events": len(events),
        "decode_apply_cpu_s": round(cpu, 3),
        "events_per_cpu_s": round(len(events) / cpu),
        "store_changes": sum(len(c.keys) for _, c in changes),
        "push_cpu_s": round(push_cpu, 3),
        "push_full": request.full if request is not None else None,
        "events_per_cpu_s_with_push": round(len(events) / (cpu + push_cpu)),
    }


def seed_services() -> list[dict[str, Any]]:
    return [service(i) for i in range(1000)]


def seed_slices() -> list[dict[str, Any]]:
    return [endpoint_slice(i, j, _ip(i * 3 + j)) for i in range(1000) for j in range(3)]


def seed_pods() -> list[dict[str, Any]]:
    return [pod(i % 1000, i // 1000, 1_000_000 + i) for i in range(10_000)]


def events_rate(count: int) -> dict[str, Any]:
    pod_events = []
    for n in range(count):
        i = n % 10_000
        # A label change (subset membership): what a rollout does to each pod.
        label = "v2" if (n // 10_000) % 2 == 0 else "v1"
        obj = pod(i % 1000, i // 1000, 1_000_000 + i, 100 + n, label)
        pod_events.append({"type": "MODIFIED", "object": obj})
    slice_events = []
    for n in range(count):
        i, j = n % 1000, (n // 1000) % 3
        obj = endpoint_slice(i, j, _ip(500_000 + n), 100 + n)
        slice_events.append({"type": "MODIFIED", "object": obj})
    return {
        "Pod": asyncio.run(_events_rate("Pod", pod_events)),
        "EndpointSlice": asyncio.run(_events_rate("EndpointSlice", slice_events)),
    }


def slice_to_envoy(services: int, writes: int, workdir: Path) -> dict[str, Any]:
    with KubeApiServer(bookmark_interval=5.0) as server:
        populate(server, services)
        server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        target = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "target", "namespace": "bench"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": TARGET_PORT}]},
        }
        server.put(target)
        kubeconfig = server.write_kubeconfig(workdir / "kubeconfig-envoy")
        cp = IstioliteProcess([], workdir, "--kubeconfig", str(kubeconfig))
        envoy = None
        try:
            envoy = sidecar_envoy(cp, workdir, namespace="bench")
            cluster = "outbound|80||target.bench.svc.cluster.local"
            latencies = []
            for n in range(writes):
                ip = f"10.200.{n // 250}.{n % 250 + 1}"
                obj = endpoint_slice(0, 0, ip)
                obj["metadata"].update(
                    name="target-0",
                    namespace="bench",
                    labels={"kubernetes.io/service-name": "target"},
                )
                obj["metadata"].pop("resourceVersion")
                started = time.perf_counter()
                server.put(obj)
                want = f"{ip}:{TARGET_PORT}"
                wait_for(
                    lambda: _has_endpoint(envoy, cluster, want),  # noqa: B023
                    timeout=30,
                    interval=0.005,
                    what="endpoint in envoy",
                )
                latencies.append(time.perf_counter() - started)
            latencies.sort()
            return {
                "writes": writes,
                "p50_ms": round(statistics.median(latencies) * 1000, 1),
                "p90_ms": round(latencies[int(len(latencies) * 0.9) - 1] * 1000, 1),
                "max_ms": round(latencies[-1] * 1000, 1),
            }
        finally:
            stop_all(envoy, cp)


def _has_endpoint(envoy: Any, cluster: str, want: str) -> bool:
    _, body = http_get(envoy.admin("/clusters"))
    prefix = f"{cluster}::{want}::"
    return any(line.startswith(prefix) for line in body.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    with tempfile.TemporaryDirectory(prefix="bench-kube-") as tmp:
        workdir = Path(tmp)
        report = {
            "config": vars(args) | {"json": str(args.json) if args.json else None},
            "events": events_rate(args.events),
            "initial_sync": initial_sync(args.services, workdir),
            "slice_to_envoy": slice_to_envoy(args.services, args.writes, workdir),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
