"""Admission webhook throughput: AdmissionReviews POSTed over HTTPS (keep-alive, as the API
server's client) to an in-process webhook server on loopback, like `istiolite serve
--webhook-addr`. Reports requests/s and latency percentiles for /validate (a VirtualService
with a 90/10 split) and /inject (a Deployment's pod), and the handlers' own CPU per request
without TLS or HTTP (the pure functions).

    .venv/bin/python -m bench.webhooks [--requests 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from istiolite.logs import configure_logging
from istiolite.security.ca import MeshCA
from istiolite.security.secure_port import serving_names
from istiolite.webhooks.admission import parse_review
from istiolite.webhooks.inject import inject_review
from istiolite.webhooks.server import WebhookServer
from istiolite.webhooks.sidecar_template import InjectionConfig
from istiolite.webhooks.validate import validate_review
from tests.support.admission import VALID_VS_SPEC, body, deployment_pod, review, virtual_service


def _labels(_namespace: str) -> dict[str, str]:
    return {"istio-injection": "enabled"}


async def _drive(
    port: int, root: bytes, path: str, payload: bytes, requests: int, concurrency: int
) -> list[float]:
    ctx = ssl.create_default_context(cadata=root.decode())
    latencies: list[float] = []
    remaining = requests
    # The API server dials the Service name; here the name is given, the address is loopback.
    url = f"https://istiod.istio-system.svc:{port}{path}"
    resolver_map = {"istiod.istio-system.svc": "127.0.0.1"}

    class _Resolver(aiohttp.abc.AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
            return [
                {"hostname": host, "host": resolver_map[host], "port": port, "family": 2,
                 "proto": 0, "flags": 0}
            ]  # fmt: skip

        async def close(self) -> None:
            return None

    connector = aiohttp.TCPConnector(ssl=ctx, limit=concurrency, resolver=_Resolver())
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(
                    url, data=payload, headers={"Content-Type": "application/json"}
                ) as response:
                    data = await response.read()
                    assert response.status == 200, data[:200]
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _in_process(payload: bytes, handle: Any, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        handle(parse_review(payload))
    return (time.process_time() - started) / n


async def main(args: argparse.Namespace) -> None:
    configure_logging("console", "warning")  # one line per injection would be the bottleneck
    with tempfile.TemporaryDirectory() as tmp:
        ca = MeshCA.load(Path(tmp) / "ca", "cluster.local")
        config = InjectionConfig()
        server = WebhookServer(
            ca, dns_names=serving_names(), injection=config, namespace_labels=_labels
        )
        port = await server.start("127.0.0.1", 0)
        cases = {
            "/validate": (
                body(review(virtual_service(copy.deepcopy(VALID_VS_SPEC)))),
                validate_review,
            ),
            "/inject": (
                body(review(deployment_pod(), namespace="apps")),
                lambda r: inject_review(r, config, _labels),
            ),
        }
        rows = []
        try:
            for path, (payload, handle) in cases.items():
                await _drive(port, ca.root_pem(), path, payload, 100, args.concurrency)  # warm-up
                cpu_before = time.process_time()
                started = time.perf_counter()
                latencies = await _drive(
                    port, ca.root_pem(), path, payload, args.requests, args.concurrency
                )
                wall = time.perf_counter() - started
                cpu = time.process_time() - cpu_before
                latencies.sort()
                rows.append(
                    {
                        "path": path,
                        "requests": len(latencies),
                        "req_per_s": round(len(latencies) / wall),
                        "p50_ms": round(statistics.median(latencies) * 1000, 2),
                        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
                        "process_cpu_ms_per_req": round(cpu / len(latencies) * 1000, 3),
                        "handler_cpu_ms_per_req": round(
                            _in_process(payload, handle, 500) * 1000, 3
                        ),
                    }
                )
        finally:
            await server.stop()
            ca.close()
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
