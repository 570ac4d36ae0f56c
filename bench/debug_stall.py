"""Benchmark: how long one /debug/config_dump of a big proxy stalls the event loop.

In-process: a mesh of N services x M endpoints is loaded into a real (not started) Istiolite, one
sidecar subscribes to everything (CDS, EDS for every cluster, LDS, RDS) through the real sans-I/O
stream, and the debug pages are served by the real HTTP server on a free loopback port. A ticker
on the loop sleeps 1 ms at a time and records how late each wake-up is; a client thread fetches
the proxy's config dump over HTTP. The loop's stall is the ticker's worst lateness during the
request.

Two modes, same page code: `thread` encodes the dump in a worker thread (as served now);
`inline` runs that same work on the loop (what the page did before: everything on the loop).

    .venv/bin/python -m bench.debug_stall [--services 1000] [--endpoints 3] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench.meshgen import cluster_name, service_port, write_mesh
from istiolite.debug import pages
from istiolite.http_server import HttpServer
from istiolite.push.context import PushContext
from istiolite.server import Istiolite
from istiolite.settings import Settings
from tests.unit.debug import state

T = TypeVar("T")
TICK = 0.001


class InlineRenderer(pages.Renderer):
    """The page's work on the event loop, as before this benchmark's change."""

    async def __call__(self, work: Callable[[], T]) -> T:
        return work()


def build_app(config: Path, services: int) -> Istiolite:
    app = Istiolite(Settings(config_dirs=[config]))
    app.files.load_all()
    app.ads.update(PushContext(app.store.snapshot(), domain="cluster.local", version="bench"))
    driver = state.connect(app, state.NODE_ID)
    for type_url, names in (
        (state.CDS, None),
        (state.EDS, [cluster_name(i) for i in range(services)]),
        (state.LDS, None),
        (state.RDS, sorted({str(service_port(i)) for i in range(services)})),
    ):
        driver.subscribe(type_url, names)
        driver.ack(type_url)
    return app


def fetch(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", f"/debug/config_dump?proxyID={state.NODE_ID}")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, resp.status
        return len(body)
    finally:
        conn.close()


async def one_run(port: int) -> dict[str, float]:
    lateness: list[float] = []
    running = True

    async def ticker() -> None:
        while running:
            due = time.perf_counter() + TICK
            await asyncio.sleep(TICK)
            lateness.append(max(0.0, time.perf_counter() - due))

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    lateness.clear()
    started = time.perf_counter()
    size = await asyncio.to_thread(fetch, port)
    elapsed = time.perf_counter() - started
    running = False
    await task
    return {
        "max_stall_ms": max(lateness) * 1000,
        "request_ms": elapsed * 1000,
        "bytes": size,
    }


async def measure(app: Istiolite, mode: str, runs: int) -> list[dict[str, float]]:
    render = InlineRenderer() if mode == "inline" else pages.Renderer()
    server = HttpServer(pages.debug_routes(state.status(app), render))
    await server.start("127.0.0.1", 0)
    try:
        await one_run(server.port)  # warm-up: imports, descriptor pools, the push's cache
        return [await one_run(server.port) for _ in range(runs)]
    finally:
        await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mesh"
        write_mesh(config, args.services, args.endpoints)
        app = build_app(config, args.services)
        print(f"mesh: {args.services} services x {args.endpoints} endpoints, one sidecar")
        print("| mode | loop's longest stall (median / worst of runs) | request | bytes |")
        print("|---|---|---|---|")
        for mode in ("inline", "thread"):
            results = asyncio.run(measure(app, mode, args.runs))
            stalls = [r["max_stall_ms"] for r in results]
            print(
                f"| {mode} | {statistics.median(stalls):.1f} ms / {max(stalls):.1f} ms "
                f"| {statistics.median(r['request_ms'] for r in results):.0f} ms "
                f"| {int(results[0]['bytes']):,} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
