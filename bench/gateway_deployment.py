"""Benchmark: the gateway deployment controller against the test API server, in-process.

N Gateways (class istio, no addresses) across 20 namespaces: (1) a new leader creating every
ServiceAccount, Deployment and Service (time to all 3N, write requests per Gateway); (2) a
second controller with fresh caches (a restart) reconciling all N again: time and write
requests (0 expected); (3) a resync of all N on the running controller (0 writes expected).

    .venv/bin/python -m bench.gateway_deployment [--gateways 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from istiolite.logs import configure_logging
from istiolite.operator.gateway_children import GatewayDeploymentConfig
from istiolite.operator.gateway_deployment import GatewayDeployer
from istiolite.sources.kube.client import KubeClient
from istiolite.sources.kube.informer import InformerOptions
from istiolite.sources.kube.resources import WATCHED
from tests.support.kube_apiserver import KubeApiServer

NAMESPACES = 20
WRITES = ("POST", "PUT", "PATCH", "DELETE")


async def _until(check: Callable[[], bool], limit: float, since: float) -> float:
    while not check():
        if time.monotonic() - since > limit:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.01)
    return time.monotonic() - since


def _writes(api: KubeApiServer, since: int) -> int:
    return sum(1 for r in list(api.requests)[since:] if r.method in WRITES)


async def run(gateways: int) -> None:
    options = InformerOptions(streaming_list=False)
    with KubeApiServer() as api, tempfile.TemporaryDirectory() as tmp:
        for i in range(NAMESPACES):
            api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{i}"}})
        for name, watched in WATCHED.items():
            if watched.group == "gateway.networking.k8s.io":
                api.install_crd(watched.group, watched.api_kind or name, watched.plural,
                                watched.versions, namespaced=watched.namespaced)  # fmt: skip
        for i in range(gateways):
            api.put(
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "Gateway",
                    "metadata": {"name": f"gw-{i}", "namespace": f"ns-{i % NAMESPACES}"},
                    "spec": {
                        "gatewayClassName": "istio",
                        "listeners": [
                            {"name": "http", "port": 80, "protocol": "HTTP"},
                            {"name": "https", "port": 443, "protocol": "HTTPS"},
                        ],
                    },
                }
            )
        kube = await KubeClient.connect(api.write_kubeconfig(Path(tmp) / "kubeconfig"))
        assert kube is not None
        config = GatewayDeploymentConfig()
        tasks: list[asyncio.Task[None]] = []
        try:
            mark, t0 = len(api.requests), time.monotonic()
            first = GatewayDeployer(kube, config, options=options)
            tasks.append(asyncio.create_task(first.run()))
            create = await _until(lambda: first.writes >= 3 * gateways, 300, t0)
            created_writes = _writes(api, mark)
            await _until(lambda: first.reconciles >= gateways, 60, t0)

            mark, t1 = len(api.requests), time.monotonic()
            for key in sorted(first.gateways):
                first.queue.add(key)
            done = first.reconciles + gateways
            resync = await _until(lambda: first.reconciles >= done, 300, t1)
            resync_writes = _writes(api, mark)

            mark, t2 = len(api.requests), time.monotonic()
            second = GatewayDeployer(kube, config, options=options)
            tasks.append(asyncio.create_task(second.run()))
            restart = await _until(lambda: second.reconciles >= gateways, 300, t2)
            await asyncio.sleep(0.5)  # anything the restart would still write, counted too
            restart_writes = _writes(api, mark)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await kube.close()
    print(f"{gateways} Gateways: all {3 * gateways} children created {create:.2f} s after the "
          f"controller started ({gateways / create:.0f} Gateways/s); write requests "
          f"{created_writes} ({created_writes / gateways:.2f} per Gateway)")  # fmt: skip
    print(f"resync of all {gateways} on the running controller: {resync:.2f} s, "
          f"{resync_writes} write requests")  # fmt: skip
    print(f"restart (fresh caches, list + reconcile all): {restart:.2f} s, "
          f"{restart_writes} write requests")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=200)
    args = parser.parse_args()
    configure_logging("json", "warning")
    asyncio.run(run(args.gateways))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
