"""Benchmark: a real Envoy starting against 1,000 services x 3 endpoints, until all is ACKed.

Measures (1) wall time from Envoy's start until CDS, EDS, LDS and RDS are applied with nothing
warming, over SotW and Delta; (2) CPU seconds istiolite spends building and serializing that
config, cold (first proxy of a push) and warm (every further proxy with the same shape).

    .venv/bin/python -m bench.startup [--services 1000] [--endpoints 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.meshgen import PORTS, write_mesh
from istiolite import type_urls
from istiolite.model.proxy import parse_proxy
from istiolite.model.store import ConfigStore
from istiolite.networking.generator import generate
from istiolite.push.context import PushContext
from istiolite.sources.files import FileSource
from tests.support.processes import EnvoyProcess, IstioliteProcess
from tests.support.wait import wait_for

NODE = "sidecar~127.0.0.1~bench-{n}.ns-0~ns-0.svc.cluster.local"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


def build_cost(config: Path, services: int) -> dict[str, float]:
    store = ConfigStore()
    FileSource([config], store).load_all()
    snapshot = store.snapshot()
    started = time.process_time()
    ctx = PushContext(snapshot, domain="cluster.local", version="bench")
    index = time.process_time() - started
    meta = {"NAMESPACE": "ns-0", "INTERCEPTION_MODE": "NONE"}
    costs = []
    for n in range(5):
        proxy = parse_proxy(NODE.format(n=n), meta)
        t = time.process_time()
        size = 0
        for type_url in type_urls.PUSH_ORDER:
            size += sum(len(r.payload) for r in generate(ctx, proxy, type_url).values())
        costs.append(time.process_time() - t)
    return {
        "index_s": index,
        "cold_s": costs[0],
        "warm_s": statistics.median(costs[1:]),
        "bytes": size,
    }


def startup(config: Path, workdir: Path, delta: bool, services: int) -> dict[str, float]:
    cp = IstioliteProcess([config], workdir)
    envoy = None
    try:
        cpu_before = cpu_seconds(cp.proc.pid)
        t0 = time.monotonic()
        envoy = EnvoyProcess(
            workdir, cp.xds_address, NODE.format(n=99), delta=delta,
            meta={"NAMESPACE": "ns-0", "INTERCEPTION_MODE": "NONE"},
        )  # fmt: skip

        def all_acked() -> bool:
            s = envoy.stats()
            routes = sum(
                1 for k, v in s.items() if ".rds." in k and k.endswith(".update_success") and v
            )
            return (
                envoy.synced()
                and s.get("cluster_manager.active_clusters", 0) >= services
                and routes >= len(PORTS)
            )

        wait_for(all_acked, timeout=120, interval=0.01, what="all types ACKed")
        elapsed = time.monotonic() - t0
        return {
            "seconds": elapsed,
            "istiolite_cpu_s": cpu_seconds(cp.proc.pid) - cpu_before,
            "envoy_cpu_s": cpu_seconds(envoy.proc.pid),
        }
    finally:
        if envoy is not None:
            envoy.stop()
        cp.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="istiolite-bench-") as tmp:
        workdir = Path(tmp)
        config = workdir / "mesh"
        write_mesh(config, args.services, args.endpoints)
        cost = build_cost(config, args.services)
        print(f"mesh: {args.services} services x {args.endpoints} endpoints, {len(PORTS)} ports")
        print(
            f"build: PushContext index {cost['index_s'] * 1000:.1f} ms CPU; all types for one "
            f"proxy {cost['cold_s'] * 1000:.1f} ms CPU cold, {cost['warm_s'] * 1000:.2f} ms warm; "
            f"{cost['bytes'] / 1024:.0f} KiB serialized"
        )
        # Baseline in the same run: one service per port, so Envoy's own start-up cost shows.
        small = workdir / "small"
        write_mesh(small, len(PORTS), args.endpoints)
        for label, mesh, count in (
            ("baseline", small, len(PORTS)),
            ("mesh", config, args.services),
        ):
            for delta in (False, True):
                runs = [startup(mesh, workdir, delta, count) for _ in range(args.runs)]
                secs = sorted(r["seconds"] for r in runs)
                cpu = sorted(r["istiolite_cpu_s"] for r in runs)
                envoy_cpu = statistics.median(r["envoy_cpu_s"] for r in runs)
                print(
                    f"{label:8} {count:5} services {'Delta' if delta else 'SotW '}: "
                    f"Envoy start -> all ACKed: median {statistics.median(secs):.2f} s "
                    f"(min {secs[0]:.2f}, max {secs[-1]:.2f}); "
                    f"CPU: istiolite {statistics.median(cpu):.2f} s, Envoy {envoy_cpu:.2f} s"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
