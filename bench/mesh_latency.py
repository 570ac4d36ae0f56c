"""What the sidecars cost, and how many pods one machine holds (needs root; network namespaces).

    .venv/bin/python -m bench.mesh_latency [--seconds 10] [--concurrency 4] [--pods 10,20,40]

(1) Latency and throughput client → server over HTTP/1.1 keep-alive, in one run, two paths
    between the same kind of pods on the same bridge: through two Envoy sidecars with mutual TLS
    (istiolite's mesh, REDIRECT interception), and direct between two pods without sidecars.
    The client is `--concurrency` threads in the client pod, each sending requests one after
    another for `--seconds`; the server is the demo app (Python, threaded). Its own cost is in
    both numbers, so the difference is the two sidecars' (Envoy's, not istiolite's).
(2) Pods per machine: sidecar pods are added in batches up to each count of `--pods`; for each
    batch, the wall time per pod (namespace, interception, bootstrap, Envoy start until its
    config is applied, app answering) and the memory of all Envoys.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
from pathlib import Path

from istiolite.demo.mesh.cluster import Mesh, Pod, PodSpec, ServiceSpec
from istiolite.demo.mesh.netns import unavailable_reason

NS = "bench"


def _client(pod: Pod, ip: str, port: int, host: str | None, seconds: float, out: list[float],
            errors: list[int]) -> None:  # fmt: skip
    def run() -> None:
        conn = http.client.HTTPConnection(ip, port, timeout=5)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                conn.request("GET", "/", headers={"Host": host or ip})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors.append(resp.status)
                    continue
            except (OSError, http.client.HTTPException):
                errors.append(0)
                conn.close()
                conn = http.client.HTTPConnection(ip, port, timeout=5)
                continue
            out.append(time.perf_counter() - start)
        conn.close()

    pod.ns.call(run, timeout=seconds + 30)


def measure(pod: Pod, ip: str, port: int, host: str | None, seconds: float, conc: int) -> dict:
    latencies: list[list[float]] = [[] for _ in range(conc)]
    errors: list[int] = []
    threads = [
        threading.Thread(target=_client, args=(pod, ip, port, host, seconds, latencies[i], errors))
        for i in range(conc)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = sorted(x for lat in latencies for x in lat)
    return {
        "requests": len(every),
        "errors": len(errors),
        "rps": len(every) / seconds,
        "p50_ms": 1000 * every[len(every) // 2],
        "p99_ms": 1000 * every[int(len(every) * 0.99)],
        "mean_ms": 1000 * statistics.fmean(every),
    }


def _envoy_rss_mib(mesh: Mesh) -> float:
    total = 0
    for pod in mesh.pods.values():
        if pod.envoy is None:
            continue
        for line in Path(f"/proc/{pod.envoy.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pods", default="10,20,40", help="pod counts to grow to, in order")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"bench.mesh_latency: {reason}")
    services = [ServiceSpec("server", 8080, NS), ServiceSpec("server-plain", 8080, NS)]
    with Mesh(services, log=print) as mesh:
        mesh.start()
        client, _server, plain_client, plain_server = mesh.add_pods(
            [
                PodSpec("client", None, "client", namespace=NS),
                PodSpec("server-v1", "server", "server", namespace=NS, port=8080),
                PodSpec("client-plain", None, "client-plain", namespace=NS, sidecar=False),
                PodSpec("server-plain", "server-plain", "plain", namespace=NS, sidecar=False,
                        port=8080),
            ]
        )  # fmt: skip
        vip = mesh.cluster_ip("server")
        measure(client, vip, 8080, "server", 2, args.concurrency)  # warm-up
        measure(plain_client, plain_server.ip, 8080, None, 2, args.concurrency)
        rows = {
            "two sidecars, mTLS": measure(
                client, vip, 8080, "server", args.seconds, args.concurrency
            ),
            "direct, no sidecar": measure(
                plain_client, plain_server.ip, 8080, None, args.seconds, args.concurrency
            ),
        }
        print(f"\n{args.concurrency} clients, {args.seconds:g} s, keep-alive, Python app server")
        print(f"{'path':22} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for name, row in rows.items():
            print(f"{name:22} {row['rps']:8.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
                  f"{row['errors']:7}")  # fmt: skip

        print("\npods per machine (sidecar pods, added in batches)")
        print(f"{'pods':>5} {'batch s':>8} {'s/pod':>7} {'envoy RSS MiB':>14}")
        n = len([p for p in mesh.pods.values() if p.envoy is not None])
        for target in (int(x) for x in args.pods.split(",")):
            batch = [
                PodSpec(f"filler-{i}", "server", f"filler-{i}", namespace=NS, port=8080)
                for i in range(n, target)
            ]
            if not batch:
                continue
            start = time.monotonic()
            mesh.add_pods(batch)
            took = time.monotonic() - start
            n = target
            print(f"{target:5} {took:8.1f} {took / len(batch):7.2f} {_envoy_rss_mib(mesh):14.0f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
