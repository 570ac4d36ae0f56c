"""Benchmark: istiolite under load from many simulated proxies (SotW and Delta).

    .venv/bin/python -m bench.scale                    # 1,000 proxies x 1,000 services x 3, both
    .venv/bin/python -m bench.scale --small            # 20 x 20 x 3, both modes (what CI runs)
    .venv/bin/python -m bench.scale --proxies 200 --services 500 --mode delta

Per mode, against a fresh `istiolite serve` on a generated config dir:
  1. connect storm: every proxy connects at once; time until each has CDS, EDS, LDS, RDS;
  2. endpoint churn: one EndpointSlice file rewritten; time from the write to each subscribed
     proxy receiving (and ACKing) the EDS update, and which types were sent to whom;
  3. service add: a new Service file; time to each proxy receiving the new cluster, its
     endpoints, and the last response of the push;
  4. istiolite's peak RSS (VmHWM) and CPU seconds per push;
  5. the limit: a bare grpc.aio server sends the responses istiolite pushed to one proxy in (3),
     byte for byte, to as many streams; istiolite's full-push time over it is the ratio.
Prints a table (Markdown) and writes JSON to bench/results/. Targets are printed, not asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.launch import BenchIstiolite, profile_summary
from bench.loadgen import TYPES, WorkerHandle, call_all, proxy_specs
from bench.meshgen import (
    cluster_name,
    endpoint_ips,
    replace_file,
    service_docs,
    service_name,
    write_mesh,
)
from bench.rawsend import RawSenderHandle

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
POLL = 0.05

TARGETS = {
    "churn_p99_s": 1.0,  # endpoint churn to 1,000 proxies, file change to last ACK
    "full_push_vs_raw": 3.0,  # full push to 1,000 proxies, within 3x of the raw-send limit
    "peak_rss_mb": 300.0,  # 1,000 services and 1,000 connected proxies
}


@dataclass
class Config:
    proxies: int = 1000
    services: int = 1000
    endpoints: int = 3
    namespaces: int = 10
    modes: tuple[str, ...] = ("sotw", "delta")
    workers: int = 2
    interception: str = "mixed"
    churn_rounds: int = 3
    add_rounds: int = 3
    raw_rounds: int = 3
    storm_timeout: float = 240.0
    round_timeout: float = 60.0
    quiet: float = 0.5  # no response for this long = the burst is over
    max_settle: float = 20.0
    debounce_after: float = 0.05  # istiolite --debounce-after (its default is 0.1)
    profile: bool = False  # run istiolite under cProfile (slower; shows where its time goes)


# ---------------------------------------------------------------------------------------------
# Small helpers.


def percentile(values: Iterable[float], q: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    rank = max(1, min(len(data), round(q / 100 * len(data) + 0.5)))  # nearest rank
    return data[rank - 1]


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
        "min": min(values) if values else None,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


def memory_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) / 1024.0  # kB
    return out


def git_commit() -> str:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=10)

    try:
        head = run("git", "rev-parse", "--short", "HEAD").stdout.strip()
        dirty = run("git", "diff-index", "--quiet", "HEAD", "--", "istiolite").returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted changes in istiolite/" if dirty else "")


def wait_until(
    condition: Callable[[], bool], timeout: float, interval: float = POLL
) -> tuple[bool, float]:
    """Bounded polling; returns (met, seconds waited)."""
    start = time.monotonic()
    while True:
        if condition():
            return True, time.monotonic() - start
        if time.monotonic() - start >= timeout:
            return False, time.monotonic() - start
        time.sleep(interval)


class Load:
    """The worker processes as one: progress summed, events merged."""

    def __init__(self, cfg: Config) -> None:
        specs = proxy_specs(cfg.proxies, cfg.namespaces, cfg.interception)
        count = max(1, min(cfg.workers, cfg.proxies))
        chunks = [specs[i::count] for i in range(count)]  # both shapes in every worker
        self.capture_index = 0
        self.workers = [WorkerHandle(chunk, self.capture_index) for chunk in chunks]
        self.proxies = cfg.proxies

    def call(self, command: str, *args: Any, timeout: float = 120) -> list[Any]:
        return call_all(self.workers, command, *args, timeout=timeout)

    def progress(self) -> dict[str, Any]:
        parts = self.call("progress")
        hits: Counter[tuple[str, str]] = Counter()
        for p in parts:
            hits.update(p["first_hits"])
        return {
            "responses": sum(p["responses"] for p in parts),
            "last_t": max(p["last_t"] for p in parts),
            "first_hits": hits,
            "converged": sum(p["converged"] for p in parts),
            "errors": sum(p["errors"] for p in parts),
            "cpu_s": sum(p["cpu_s"] for p in parts),
            "slow_path": sum(p["slow_path"] for p in parts),
        }

    def events(self) -> dict[int, dict[str, Any]]:
        merged: dict[int, dict[str, Any]] = {}
        for part in self.call("events"):
            merged.update(part)
        return merged

    def mark(self, watch: list[str], eds_watch: list[str]) -> dict[str, int]:
        total: Counter[str] = Counter()
        for part in self.call("mark", watch, eds_watch):
            total.update(part)
        return dict(total)

    def settle(self, quiet: float, max_wait: float) -> float:
        """Wait until no proxy has received anything for `quiet` seconds (bounded)."""
        start = time.monotonic()
        while time.monotonic() - start < max_wait:
            last = self.progress()["last_t"]
            if time.monotonic() - max(last, start) >= quiet:
                break
            time.sleep(POLL)
        return time.monotonic() - start

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


# ---------------------------------------------------------------------------------------------
# Scenarios.


def storm(cfg: Config, load: Load, ist: BenchIstiolite, delta: bool) -> dict[str, Any]:
    pid = ist.proc.pid
    cpu0, client0 = cpu_seconds(pid), load.progress()["cpu_s"]
    t0 = time.monotonic()
    load.call("connect", ist.xds_address, delta)

    def done() -> bool:
        p = load.progress()
        return p["converged"] + p["errors"] >= cfg.proxies

    met, _ = wait_until(done, cfg.storm_timeout, interval=0.1)
    wall = time.monotonic() - t0
    rows = [r for part in load.call("converged") for r in part]
    per_type = {
        t: spread([r["converged"][t] - t0 for r in rows if t in r["converged"]])
        for t in (*TYPES, "done")
    }
    cpu1, client1 = cpu_seconds(pid), load.progress()["cpu_s"]
    load.settle(cfg.quiet, cfg.max_settle)
    return {
        "proxies": cfg.proxies,
        "converged": sum(1 for r in rows if "done" in r["converged"]),
        "timed_out": not met,
        "errors": sorted({r["error"] for r in rows if r["error"]}),
        "streams_failed": sum(1 for r in rows if r["error"]),
        "latency_s": per_type,
        "wall_s": wall,
        "istiolite_cpu_s": cpu1 - cpu0,
        "loadgen_cpu_s": client1 - client0,
        "responses": sum(r["responses"] for r in rows),
        "bytes": sum(r["bytes"] for r in rows),
        "eds_per_proxy": statistics.median(r["eds"] for r in rows) if rows else 0,
        "routes_per_proxy": statistics.median(r["routes"] for r in rows) if rows else 0,
        "memory_mb": memory_mb(pid),
    }


def _types_sent(events: dict[int, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per type: responses, proxies that got one, resources in them."""
    responses: Counter[str] = Counter()
    proxies: Counter[str] = Counter()
    resources: Counter[str] = Counter()
    for info in events.values():
        seen = set()
        for _t, kind, count, _changed, _hits, _size in info["events"]:
            responses[kind] += 1
            resources[kind] += count
            seen.add(kind)
        proxies.update(seen)
    return {
        k: {"responses": responses[k], "proxies": proxies[k], "resources": resources[k]}
        for k in sorted(responses)
    }


def churn(cfg: Config, load: Load, ist: BenchIstiolite, mesh: Path, scratch: Path) -> dict:
    pid = ist.proc.pid
    target = cluster_name(0, cfg.namespaces)
    base = endpoint_ips(0, cfg.endpoints)
    rounds = []
    cpu0, client0, wall0 = cpu_seconds(pid), load.progress()["cpu_s"], time.monotonic()
    for r in range(cfg.churn_rounds):
        subscribed = load.mark([target], [target]).get(target, 0)
        # Replace one address: one endpoint removed, a new one added.
        ips = [*base[:-1], f"10.250.{r // 256}.{r % 256 + 1}"]
        key = ("EDS", target)
        docs = service_docs(0, ips, cfg.namespaces)
        t_write = time.monotonic()
        replace_file(mesh / f"{service_name(0)}.yaml", docs, scratch)

        def arrived(key: tuple[str, str] = key, subscribed: int = subscribed) -> bool:
            return bool(load.progress()["first_hits"][key] >= subscribed)

        met, _ = wait_until(arrived, cfg.round_timeout)
        load.settle(cfg.quiet, cfg.max_settle)
        events = load.events()
        latencies = [
            info["first_hits"][f"EDS {target}"] - t_write
            for info in events.values()
            if f"EDS {target}" in info["first_hits"]
        ]
        rounds.append(
            {
                "subscribed": subscribed,
                "got_eds": len(latencies),
                "timed_out": not met,
                "latency_s": spread(latencies),
                "types": _types_sent(events),
                "latencies": latencies,
            }
        )
    cpu1, client1 = cpu_seconds(pid), load.progress()["cpu_s"]
    pooled = [x for r in rounds for x in r.pop("latencies")]
    types_total: Counter[str] = Counter()
    for r in rounds:
        types_total.update({k: v["responses"] for k, v in r["types"].items()})
    return {
        "cluster": target,
        "rounds": rounds,
        "latency_s": spread(pooled),
        "subscribed": min(r["subscribed"] for r in rounds),
        "got_eds": min(r["got_eds"] for r in rounds),
        "only_eds": set(types_total) <= {"EDS"},
        "responses_by_type": dict(types_total),
        "istiolite_cpu_per_push_s": (cpu1 - cpu0) / max(1, cfg.churn_rounds),
        "loadgen_cpu_s": client1 - client0,
        "wall_s": time.monotonic() - wall0,
    }


def service_add(
    cfg: Config, load: Load, ist: BenchIstiolite, mesh: Path, scratch: Path
) -> tuple[dict[str, Any], list[bytes]]:
    pid = ist.proc.pid
    rounds = []
    captured: list[bytes] = []
    cpu0, client0, wall0 = cpu_seconds(pid), load.progress()["cpu_s"], time.monotonic()
    for r in range(cfg.add_rounds):
        index = cfg.services + r
        name = f"svc-new-{r}"
        target = cluster_name(index, cfg.namespaces, name=name)
        load.mark([target], [])
        docs = service_docs(index, endpoint_ips(index, cfg.endpoints), cfg.namespaces, name=name)
        t_write = time.monotonic()
        replace_file(mesh / f"{name}.yaml", docs, scratch)

        def arrived(target: str = target) -> bool:
            hits = load.progress()["first_hits"]
            return min(hits[("CDS", target)], hits[("EDS", target)]) >= cfg.proxies

        met, _ = wait_until(arrived, cfg.round_timeout)
        load.settle(cfg.quiet, cfg.max_settle)
        events = load.events()
        cds = [i["first_hits"][f"CDS {target}"] - t_write for i in events.values()
               if f"CDS {target}" in i["first_hits"]]  # fmt: skip
        eds = [i["first_hits"][f"EDS {target}"] - t_write for i in events.values()
               if f"EDS {target}" in i["first_hits"]]  # fmt: skip
        complete = [max(e[0] for e in i["events"]) - t_write
                    for i in events.values() if i["events"]]  # fmt: skip
        first = min((min(e[0] for e in i["events"]) for i in events.values() if i["events"]),
                    default=t_write)  # fmt: skip
        if r == 0:
            captured = [raw for _t, raw in load.workers[0].call("captured")]
        rounds.append(
            {
                "cluster": target,
                "got_cds": len(cds),
                "got_eds": len(eds),
                "timed_out": not met,
                "cds_s": spread(cds),
                "eds_s": spread(eds),
                "complete_s": spread(complete),
                "first_response_s": first - t_write,
                "types": _types_sent(events),
                "bytes_per_proxy": statistics.median(
                    sum(e[5] for e in i["events"]) for i in events.values()
                ),
                "_cds": cds,
                "_eds": eds,
                "_complete": complete,
            }
        )
    cpu1, client1 = cpu_seconds(pid), load.progress()["cpu_s"]
    pooled = {k: [x for r in rounds for x in r.pop("_" + k)] for k in ("cds", "eds", "complete")}
    result = {
        "rounds": rounds,
        "cds_s": spread(pooled["cds"]),
        "eds_s": spread(pooled["eds"]),
        "complete_s": spread(pooled["complete"]),
        "got_cds": min(r["got_cds"] for r in rounds),
        "got_eds": min(r["got_eds"] for r in rounds),
        "push_max_s": statistics.median(r["complete_s"]["max"] or 0 for r in rounds),
        "push_spread_s": statistics.median(
            (r["complete_s"]["max"] or 0) - r["first_response_s"] for r in rounds
        ),
        "istiolite_cpu_per_push_s": (cpu1 - cpu0) / max(1, cfg.add_rounds),
        "loadgen_cpu_s": client1 - client0,
        "wall_s": time.monotonic() - wall0,
        "captured_messages": len(captured),
        "captured_bytes": sum(len(c) for c in captured),
    }
    return result, captured


def raw_limit(
    cfg: Config, load: Load, raw: RawSenderHandle, payloads: list[bytes], delta: bool
) -> dict[str, Any]:
    load.call("close")
    if not payloads:
        return {"error": "nothing captured"}
    load.call("connect", raw.address, delta)
    ready, _ = wait_until(lambda: raw.ready_streams() >= cfg.proxies, cfg.round_timeout)
    memory_before = memory_mb(raw.pid)
    raw_cpu0 = cpu_seconds(raw.pid)
    rounds = []
    want = len(payloads)
    client0, wall0 = load.progress()["cpu_s"], time.monotonic()
    for _ in range(cfg.raw_rounds):
        load.mark([], [])
        t_send, streams = raw.send(payloads)
        met, _ = wait_until(
            lambda: load.progress()["responses"] >= want * cfg.proxies, cfg.round_timeout
        )
        events = load.events()
        done = [
            sorted(e[0] for e in info["events"])[want - 1] - t_send
            for info in events.values()
            if len(info["events"]) >= want
        ]
        first = min((e[0] for i in events.values() for e in i["events"]), default=t_send)
        rounds.append(
            {
                "streams": streams,
                "received_all": len(done),
                "timed_out": not met,
                "complete_s": spread(done),
                "spread_s": (max(done) if done else 0) - (first - t_send),
            }
        )
        load.settle(cfg.quiet, cfg.max_settle)
    return {
        "ready_streams": ready,
        "messages": want,
        "bytes_per_stream": sum(len(p) for p in payloads),
        "rounds": rounds,
        "received_all": min(r["received_all"] for r in rounds),
        "push_max_s": statistics.median(r["complete_s"]["max"] or 0 for r in rounds),
        "push_spread_s": statistics.median(r["spread_s"] for r in rounds),
        "loadgen_cpu_s": load.progress()["cpu_s"] - client0,
        "wall_s": time.monotonic() - wall0,
        "loadgen_slow_path": load.progress()["slow_path"],
        "sender_cpu_per_push_s": (cpu_seconds(raw.pid) - raw_cpu0) / max(1, cfg.raw_rounds),
        "sender_memory_mb": {"streams_open": memory_before, "after_sends": memory_mb(raw.pid)},
    }


def log_summary(ist: BenchIstiolite) -> dict[str, Any]:
    levels: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    pushes = 0
    unparsed = 0
    for line in ist.log().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            unparsed += 1 if line.strip() else 0
            continue
        if not isinstance(event, dict):
            continue
        level = str(event.get("level", "?"))
        levels[level] += 1
        if event.get("event") == "push":
            pushes += 1
        if level in ("warning", "error", "critical", "exception"):
            problems[f"{level}: {event.get('event')}"] += 1
    return {
        "levels": dict(levels),
        "problems": dict(problems.most_common(20)),
        "push_lines": pushes,
        "non_json_lines": unparsed,
    }


def run_mode(cfg: Config, mode: str, workdir: Path) -> dict[str, Any]:
    delta = mode == "delta"
    base = workdir / mode
    mesh = base / "mesh"
    scratch = base / "scratch"
    write_mesh(mesh, cfg.services, cfg.endpoints, cfg.namespaces)
    started = time.monotonic()
    prof = base / "istiolite.prof" if cfg.profile else None
    ist = BenchIstiolite([mesh], base, debounce_after=cfg.debounce_after, profile=prof)
    load = raw = None
    result: dict[str, Any] = {"mode": mode, "istiolite_start_s": time.monotonic() - started}
    try:
        load = Load(cfg)
        raw = RawSenderHandle()
        result["storm"] = storm(cfg, load, ist, delta)
        result["churn"] = churn(cfg, load, ist, mesh, scratch)
        result["add"], captured = service_add(cfg, load, ist, mesh, scratch)
        result["loadgen_slow_path"] = load.progress()["slow_path"]
        result["memory_mb"] = memory_mb(ist.proc.pid)
        result["istiolite_cpu_total_s"] = cpu_seconds(ist.proc.pid)
        result["raw"] = raw_limit(cfg, load, raw, captured, delta)
        add, limit = result["add"], result["raw"]
        if limit.get("push_max_s"):
            result["ratio_max"] = add["push_max_s"] / limit["push_max_s"]
            result["ratio_spread"] = add["push_spread_s"] / max(limit["push_spread_s"], 1e-6)
        result["istiolite_alive"] = ist.alive()
    finally:
        if load is not None:
            load.stop()
        if raw is not None:
            raw.stop()
        ist.stop()
    result["log"] = log_summary(ist)
    if prof is not None:
        result["profile"] = profile_summary(prof)
    return result


# ---------------------------------------------------------------------------------------------
# Output.


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def _trio(s: dict[str, Any], keys: tuple[str, ...] = ("p50", "p99", "max")) -> str:
    return " / ".join(_ms(s.get(k)) for k in keys)


def _cores(scenario: dict[str, Any]) -> str:
    wall = scenario.get("wall_s") or 0
    return f"{scenario.get('loadgen_cpu_s', 0) / wall:.1f}" if wall else "-"


def _types(by_type: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(by_type.items())) or "none"


def table_rows(cfg: Config, r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(row label, value, target): one list per mode; labels are the same for every mode."""
    s, c, a, w = r.get("storm", {}), r.get("churn", {}), r.get("add", {}), r.get("raw", {})
    lat = s.get("latency_s", {})
    n = cfg.proxies
    problems = r.get("log", {}).get("problems", {})
    warnings = sum(v for k, v in problems.items() if k.startswith("warning"))
    errors = sum(v for k, v in problems.items() if not k.startswith("warning"))
    rows = [
        ("connect storm: proxies converged", f"{s.get('converged', 0)}/{n}", "all"),
        *(
            (f"connect storm: {t} ACKed p50 / p99", _trio(lat.get(t, {}), ("p50", "p99")), "")
            for t in TYPES
        ),
        ("connect storm: all types p50 / p99 / last", _trio(lat.get("done", {})), ""),
        (
            "connect storm: istiolite CPU / loadgen CPU",
            f"{s.get('istiolite_cpu_s', 0):.2f} s / {s.get('loadgen_cpu_s', 0):.2f} s",
            "",
        ),
        (
            "endpoint churn: proxies got EDS / subscribed",
            f"{c.get('got_eds', 0)}/{c.get('subscribed', 0)}",
            "all",
        ),
        ("endpoint churn: write → EDS p50 / p99 / max", _trio(c.get("latency_s", {})), "p99 < 1 s"),
        (
            "endpoint churn: responses sent, by type",
            _types(c.get("responses_by_type", {})),
            "EDS only",
        ),
        ("endpoint churn: istiolite CPU per push", _ms(c.get("istiolite_cpu_per_push_s")), ""),
        (
            "service add: proxies got new cluster / its EDS",
            f"{a.get('got_cds', 0)}/{n} / {a.get('got_eds', 0)}/{n}",
            "all",
        ),
        ("service add: write → CDS p50 / p99 / max", _trio(a.get("cds_s", {})), ""),
        ("service add: write → its EDS p50 / p99 / max", _trio(a.get("eds_s", {})), ""),
        ("service add: write → push complete p50 / p99 / max", _trio(a.get("complete_s", {})), ""),
        (
            "service add: responses per proxy per push",
            f"{a.get('captured_messages', 0)} ({a.get('captured_bytes', 0) / 1024:.0f} KiB)",
            "",
        ),
        ("service add: istiolite CPU per push", _ms(a.get("istiolite_cpu_per_push_s")), ""),
        (
            "raw send: streams got all / same bytes, complete (max)",
            f"{w.get('received_all', 0)}/{n}, {_ms(w.get('push_max_s'))}",
            "",
        ),
        (
            "full push ÷ raw send (last proxy; first→last spread)",
            f"{r.get('ratio_max', 0):.1f}x ; {r.get('ratio_spread', 0):.1f}x",
            "<= 3x",
        ),
        (
            "istiolite peak RSS (VmHWM)",
            f"{r.get('memory_mb', {}).get('VmHWM', 0):.0f} MB",
            "< 300 MB",
        ),
        ("istiolite log: warnings / errors", f"{warnings} / {errors}", "0 / 0"),
        (
            "load generator busy (cores): storm / churn / add / raw",
            " / ".join(_cores(x) for x in (s, c, a, w)),
            "< 2",
        ),
    ]
    return rows


def row_labels(cfg: Config) -> list[str]:
    """Every row of the table, in order (the same whatever the results)."""
    return [label for label, _value, _target in table_rows(cfg, {})]


def render_table(cfg: Config, results: list[dict[str, Any]]) -> str:
    per_mode = [table_rows(cfg, r) for r in results]
    head = ["", *(r["mode"].replace("sotw", "SotW").replace("delta", "Delta") for r in results)]
    head.append("target")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, (label, _v, target) in enumerate(per_mode[0]):
        values = [rows[i][1] for rows in per_mode]
        lines.append("| " + " | ".join([label, *values, target]) + " |")
    return "\n".join(lines)


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds, so every child process is stopped by its PID


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--proxies", type=int)
    parser.add_argument("--services", type=int)
    parser.add_argument("--endpoints", type=int)
    parser.add_argument("--mode", choices=("sotw", "delta", "both"), default="both")
    parser.add_argument("--workers", type=int, help="load-generator processes (default 1-2)")
    parser.add_argument("--interception", choices=("mixed", "redirect", "none"), default="mixed")
    parser.add_argument("--rounds", type=int, help="churn, service-add and raw rounds")
    parser.add_argument(
        "--debounce-after", type=float, default=0.05, help="istiolite's --debounce-after"
    )
    parser.add_argument(
        "--profile", action="store_true", help="run istiolite under cProfile; print its hot spots"
    )
    parser.add_argument("--small", action="store_true", help="20 proxies x 20 services (CI)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (meshes, istiolite logs)"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS, help="where the JSON report goes"
    )
    args = parser.parse_args(argv)

    cfg = Config()
    if args.small:
        cfg = Config(
            proxies=20, services=20, endpoints=3, workers=1, churn_rounds=2, add_rounds=2,
            raw_rounds=2, storm_timeout=30, round_timeout=15, quiet=0.3, max_settle=5,
        )  # fmt: skip
    if args.proxies is not None:
        cfg.proxies = args.proxies
    if args.services is not None:
        cfg.services = args.services
    if args.endpoints is not None:
        cfg.endpoints = args.endpoints
    if args.workers is not None:
        cfg.workers = args.workers
    elif not args.small:
        cfg.workers = 1 if cfg.proxies < 100 else 2
    if args.rounds is not None:
        cfg.churn_rounds = cfg.add_rounds = cfg.raw_rounds = max(1, args.rounds)
    cfg.interception = args.interception
    cfg.debounce_after = args.debounce_after
    cfg.profile = args.profile
    cfg.modes = ("sotw", "delta") if args.mode == "both" else (args.mode,)

    commit = git_commit()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"bench.scale {date}, istiolite {commit}: {cfg.proxies} proxies, {cfg.services} services"
        f" x {cfg.endpoints} endpoints, modes {', '.join(cfg.modes)}, {cfg.workers} load worker(s)",
        flush=True,
    )
    results = []
    tmp = tempfile.mkdtemp(prefix="istiolite-scale-")
    if args.keep:
        print(f"work dir (kept): {tmp}", flush=True)
    try:
        for mode in cfg.modes:
            t = time.monotonic()
            result = run_mode(cfg, mode, Path(tmp))
            result["wall_s"] = time.monotonic() - t
            results.append(result)
            print(f"{mode}: done in {result['wall_s']:.0f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    table = render_table(cfg, results)
    print()
    print(table)
    for r in results:
        problems = r["log"]["problems"]
        if problems:
            print(f"\n{r['mode']}: istiolite log problems: {problems}")
        if "profile" in r:
            print(f"\n{r['mode']}: istiolite profile (cProfile, whole run)\n{r['profile']}")
    report = {
        "date": date,
        "commit": commit,
        "config": asdict(cfg),
        "targets": TARGETS,
        "results": results,
        "table": table,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results_dir / f"scale-{stamp}-{cfg.proxies}x{cfg.services}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nJSON: {out}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
