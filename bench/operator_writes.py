"""Benchmark: the leader's writes against the test API server, in-process.

Measures (1) a new leader publishing the root ConfigMap to N namespaces (from its first list to
the last ConfigMap written) and republishing all of them after a root change; (2) a new leader
writing the status of M VirtualServices (a tenth of them invalid); (3) the latency from a new
Namespace to its ConfigMap, one at a time. Writes per second are what the leader's bounded
concurrency (4 writers each) gets from one API server.

    .venv/bin/python -m bench.operator_writes [--namespaces 500] [--objects 500] [--new 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from istiolite.logs import configure_logging
from istiolite.model.store import ConfigStore
from istiolite.operator.writers import LeaderWriters
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.informer import InformerOptions
from istiolite.sources.kube.source import KubeSource
from tests.support.kube_apiserver import KubeApiServer

NAME = "istio-ca-root-cert"


async def _until(
    check: Callable[[], bool], limit: float, every: float = 0.005, since: float | None = None
) -> float:
    started = time.monotonic() if since is None else since
    while not check():
        if time.monotonic() - started > limit:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(every)
    return time.monotonic() - started


def _published(api: KubeApiServer, names: list[str], pem: str) -> bool:
    return all(
        (cm := api.get("v1", "ConfigMap", ns, NAME)) is not None
        and cm["data"]["root-cert.pem"] == pem
        for ns in names
    )


async def run(namespaces: int, objects: int, new: int) -> None:
    options = InformerOptions(streaming_list=False)
    with KubeApiServer() as api, tempfile.TemporaryDirectory() as tmp:
        names = [f"ns-{i}" for i in range(namespaces)]
        for name in names:
            api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        for i in range(objects):
            host = "" if i % 10 == 0 else "reviews"
            api.put(
                {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "VirtualService",
                    "metadata": {"name": f"vs-{i}", "namespace": names[i % namespaces]},
                    "spec": {
                        "hosts": ["reviews"],
                        "http": [{"route": [{"destination": {"host": host}}]}],
                    },
                }
            )
        kube = await KubeClient.connect(api.write_kubeconfig(Path(tmp) / "kubeconfig"))
        assert kube is not None
        source = KubeSource(kube, ConfigStore(), options=options)
        source_task = asyncio.create_task(source.run())
        await source.wait_synced()
        pem = {"value": "-----BEGIN CERTIFICATE-----\none\n-----END CERTIFICATE-----\n"}
        writers = LeaderWriters(
            kube, lambda: pem["value"].encode(), results=source.object_results, options=options
        )
        source.subscribe_results(writers.results_changed)
        try:
            lag = {"max": 0.0}

            async def ticker() -> None:
                # How late a 10 ms timer fires while the leader writes: the xDS loop's stall.
                while True:
                    before = time.monotonic()
                    await asyncio.sleep(0.01)
                    lag["max"] = max(lag["max"], time.monotonic() - before - 0.01)

            tick = asyncio.create_task(ticker())
            t0 = time.monotonic()
            writers.start()
            publish, status = await asyncio.gather(
                _until(lambda: _published(api, names, pem["value"]), 300, 0.05, t0),
                _until(
                    lambda: writers.status is not None and writers.status.writes >= objects,
                    300,
                    0.02,
                    t0,
                ),
            )
            pem["value"] = "-----BEGIN CERTIFICATE-----\ntwo\n-----END CERTIFICATE-----\n"
            writers.root_changed()
            rotate = await _until(lambda: _published(api, names, pem["value"]), 300, 0.05)
            latencies = []
            for i in range(new):
                name = f"new-{i}"
                api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
                latencies.append(
                    await _until(lambda name=name: _published(api, [name], pem["value"]), 30)
                )
        finally:
            tick.cancel()
            await writers.close()
            source_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await source_task
            await kube.close()
    print(f"root ConfigMaps, {namespaces} namespaces: first publish {publish:.2f} s "
          f"({namespaces / publish:.0f}/s), after a root change {rotate:.2f} s "
          f"({namespaces / rotate:.0f}/s)")  # fmt: skip
    print(f"status of {objects} VirtualServices (10% invalid): all written {status:.2f} s "
          f"after the leader started (alongside the ConfigMaps)")  # fmt: skip
    print(f"event loop: a 10 ms timer fired at most {lag['max'] * 1000:.0f} ms late meanwhile")
    print(f"new namespace -> ConfigMap: median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms over {new}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--new", type=int, default=20)
    args = parser.parse_args()
    configure_logging("json", "warning")
    asyncio.run(run(args.namespaces, args.objects, args.new))
    return 0


if __name__ == "__main__":
    sys.exit(main())
