"""`make demo` as root: the bookinfo mesh on network namespaces, with live traffic and a live
summary; `--check` builds it, verifies it, tears it down and says what it saw."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from istiolite.demo.mesh import bookinfo
from istiolite.demo.mesh.cluster import Mesh, MeshError, Pod
from istiolite.demo.mesh.load import Load
from istiolite.demo.mesh.netns import NETNS_DIR, PREFIX, unavailable_reason
from istiolite.demo.mesh.summary import Summary

SUMMARY_EVERY = 5.0  # seconds


def _say(line: str) -> None:
    print(line, flush=True)


def _xfcc_uri(xfcc: str) -> str:
    return next((p[4:] for p in xfcc.split(";") if p.startswith("URI=")), "(none)")


def build(extra_config_dirs: list[Path]) -> Mesh:
    mesh = Mesh(bookinfo.SERVICES, extra_config_dirs=extra_config_dirs, log=_say)
    try:
        started = time.monotonic()
        mesh.start()
        _say(f"istiolite serving on {mesh.gateway} (xDS 15010, secure xDS + CA 15012)")
        mesh.add_pods(bookinfo.PODS)
        _say(f"{len(mesh.pods)} pods up in {time.monotonic() - started:.1f}s")
    except BaseException:
        mesh.close()
        raise
    return mesh


def check(mesh: Mesh) -> list[str]:
    """Verify the mesh works as a user expects; the problems found (none: it works)."""
    problems = []
    _say("pods (each a network namespace with its own address):")
    for pod in mesh.pods.values():
        inode = pod.ns.path.stat().st_ino
        sidecar = "envoy sidecar, istio-init iptables" if pod.envoy else "no sidecar"
        _say(f"  {pod.name:15} {pod.ip:12} netns {pod.ns.path} (inode {inode}), {sidecar}")
        if not pod.ns.path.exists():
            problems.append(f"{pod.name}: no network namespace")
    sleep = mesh.pods["sleep"]
    seen: dict[str, set[str]] = {}
    for _ in range(30):  # until reviews v2/v3 answered too (they call ratings)
        reply = sleep.http(mesh.cluster_ip("productpage"), bookinfo.PORT, "productpage")
        if reply.status != 200:
            problems.append(f"sleep → productpage: HTTP {reply.status}")
            break
        page = reply.json()
        seen.setdefault("productpage", set()).add(_xfcc_uri(page["xfcc"]))
        for hop in page["calls"]:
            answer = hop.get("answer", {})
            seen.setdefault(answer.get("service", hop["target"]), set()).add(
                _xfcc_uri(answer.get("xfcc", ""))
            )
            for inner in answer.get("calls", []):
                seen.setdefault("ratings", set()).add(
                    _xfcc_uri(inner.get("answer", {}).get("xfcc", ""))
                )
        if "ratings" in seen:
            break
    _say("SPIFFE IDs each server saw in x-forwarded-client-cert (mutual TLS between sidecars):")
    expected = {
        "productpage": "sleep",
        "details": "bookinfo-productpage",
        "reviews": "bookinfo-productpage",
        "ratings": "bookinfo-reviews",
    }
    for service, caller in expected.items():
        ids = sorted(seen.get(service, set()))
        _say(f"  {service:12} ← {', '.join(ids) or '(no call reached it)'}")
        want = f"spiffe://cluster.local/ns/{bookinfo.NAMESPACE}/sa/{caller}"
        if ids != [want]:
            problems.append(f"{service} saw {ids}, expected {want}")
    legacy, ratings = mesh.pods["legacy"], mesh.pods["ratings-v1"]
    mesh.copy_in(bookinfo.EXAMPLES / "strict-mtls.yaml")
    refused = _wait_refused(legacy, ratings)
    mesh.delete("strict-mtls.yaml")
    _say(f"STRICT mTLS: the pod without a sidecar is {'refused' if refused else 'NOT refused'}")
    if not refused:
        problems.append("STRICT PeerAuthentication did not refuse the pod without a sidecar")
    return problems


def _wait_refused(legacy: Pod, target: Pod, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            legacy.http(target.ip, bookinfo.PORT)
        except OSError:
            return True
        time.sleep(0.2)
    return False


def leftovers(pid: int) -> list[str]:
    """Namespaces of this run still present (none after a clean teardown)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(str(p) for p in NETNS_DIR.iterdir() if p.name.startswith(f"{PREFIX}-{pid}-"))


def _instructions(mesh: Mesh) -> str:
    sleep = mesh.pods["sleep"].ns.name
    config = mesh.config_dir
    ex = bookinfo.EXAMPLES
    return f"""
The bookinfo mesh is running: every pod is a network namespace with an Envoy sidecar that got
its certificate from istiolite's CA (token from the demo's local issuer), traffic intercepted by
istio-init's iptables rules. `sleep` sends productpage a request every 50 ms.

Try (as root, in another terminal):
  ip netns exec {sleep} curl -s productpage:9080/ | python3 -m json.tool
  ip netns exec {sleep} curl -s reviews:9080/      # by name: /etc/hosts → ClusterIP → sidecar
  cp {ex}/reviews-canary.yaml {config}/   # 90 % v1, 10 % v2: watch the reviews line
  cp {ex}/ratings-fault.yaml {config}/    # ratings answers 503: errors climb
  cp {ex}/ratings-authz.yaml {config}/    # only reviews may call ratings
  cp {ex}/strict-mtls.yaml {config}/      # mTLS required in the namespace
  rm {config}/<file>                      # undo
Logs and config: {mesh.workdir}   (removed when the demo stops). Ctrl-C stops everything.
"""


def serve(mesh: Mesh, duration: float | None) -> None:
    sleep = mesh.pods["sleep"]
    load = Load(sleep, mesh.cluster_ip("productpage"), bookinfo.PORT, "productpage", 0.05)
    load.start()
    summary = Summary(mesh, load)
    summary.lines()  # the baseline
    _say(_instructions(mesh))
    started = time.monotonic()
    try:
        while duration is None or time.monotonic() - started < duration:
            time.sleep(SUMMARY_EVERY)
            if mesh.istiolite is not None:
                mesh.istiolite.check()
            _say(time.strftime("%H:%M:%S") + " per service (from the sidecars' stats):")
            for line in summary.lines():
                _say(line)
    finally:
        load.stop()


def main(args: argparse.Namespace, before_teardown: Callable[[], None] = lambda: None) -> int:
    """Run the mesh demo (MeshError when this machine cannot). However it ends (Ctrl-C too),
    `before_teardown` runs (the caller stops taking signals) and then everything is undone."""
    reason = unavailable_reason()
    if reason is not None:
        raise MeshError(reason)
    mesh: Mesh | None = None
    problems: list[str] = []
    try:
        mesh = build(list(args.config_dir or []))
        if args.check:
            problems = check(mesh)
        else:
            serve(mesh, args.duration)
    finally:
        before_teardown()
        if mesh is not None:
            mesh.close()
        left = leftovers(os.getpid())
        _say(f"torn down: {'nothing left' if not left else 'LEFT: ' + ', '.join(left)}")
    problems += [f"left behind: {p}" for p in left]
    for problem in problems:
        _say(f"PROBLEM: {problem}")
    return 1 if problems else 0
