"""Steady traffic from inside a pod: one client thread in the pod's network namespace sending
GETs one after another over a kept-alive connection (reopened after an error), recording each
answer's status, latency and which pod/version answered."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from istiolite.demo.mesh.cluster import Pod

MAX_RECORDED = 200_000  # results kept (a demo left running for hours keeps only counters)


MAX_DETAIL = 500  # characters of a failure's explanation kept per result


@dataclass
class Result:
    at: float
    status: int  # 0: no HTTP answer (connection refused / reset / timeout)
    latency: float
    answered_by: str = ""  # the pod that answered (from the app's JSON)
    error: str = ""  # why there was no answer (status 0): the exception and its message
    # Why an answer was not a 200: who answered (the `server` header: the app, or an Envoy)
    # and what it said (the app's failed next hops, or the start of the body).
    detail: str = ""

    def __str__(self) -> str:
        why = self.error or self.detail
        return f"{self.status} after {self.latency:.3f}s" + (f": {why}" if why else "")


def answered(start: float, resp: http.client.HTTPResponse, body: bytes) -> Result:
    """The Result of an HTTP answer; for a non-200, what explains it."""
    result = Result(start, resp.status, time.monotonic() - start)
    try:
        page = json.loads(body)
    except ValueError:
        page = None
    if isinstance(page, dict):
        result.answered_by = str(page.get("pod", ""))
    if resp.status != 200:
        result.detail = _failure_detail(resp, body, page)
    return result


def no_answer(start: float, err: Exception) -> Result:
    return Result(start, 0, time.monotonic() - start, error=f"{type(err).__name__}: {err}")


def _failure_detail(resp: http.client.HTTPResponse, body: bytes, page: object) -> str:
    parts = [f"server={resp.getheader('server', '')!r}"]
    flags = resp.getheader("x-envoy-response-flags")
    if flags:
        parts.append(f"flags={flags}")
    calls = page.get("calls") if isinstance(page, dict) else None
    if isinstance(calls, list):
        # The app's page: the next hops that did not answer 200, and how they failed.
        for hop in calls:
            if isinstance(hop, dict) and hop.get("status") != 200:
                said = hop.get("error") or hop.get("body") or json.dumps(hop.get("answer"))
                by = f" from {hop['server']!r}" if hop.get("server") else ""
                parts.append(f"hop {hop.get('target')} -> {hop.get('status')}{by}: {said}")
    else:
        parts.append(f"body={body[:200].decode(errors='replace')!r}")
    return "; ".join(parts)[:MAX_DETAIL]


@dataclass
class Load:
    pod: Pod
    ip: str
    port: int
    host: str
    interval: float = 0.0  # pause between requests
    timeout: float = 5.0
    results: list[Result] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = self.pod.ns.thread(self._run, "load")
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
        return self.results

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def since(self, moment: float) -> list[Result]:
        return [r for r in list(self.results) if r.at >= moment]

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(self.ip, self.port, timeout=self.timeout)
            start = time.monotonic()
            try:
                conn.request("GET", "/", headers={"Host": self.host})
                resp = conn.getresponse()
                result = answered(start, resp, resp.read())
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as err:
                result = no_answer(start, err)
                if conn is not None:
                    conn.close()
                conn = None
            self.statuses[result.status] += 1
            if len(self.results) < MAX_RECORDED:
                self.results.append(result)
            if self.interval:
                self._stop.wait(self.interval)
        if conn is not None:
            conn.close()


def burst(pod: Pod, ip: str, port: int, host: str, count: int) -> list[Result]:
    """`count` requests one after another from inside `pod` (kept-alive connection)."""
    load = Load(pod, ip, port, host)

    def run() -> list[Result]:
        load._stop.clear()
        conn = http.client.HTTPConnection(ip, port, timeout=load.timeout)
        try:
            for _ in range(count):
                start = time.monotonic()
                try:
                    conn.request("GET", "/", headers={"Host": host})
                    resp = conn.getresponse()
                    load.results.append(answered(start, resp, resp.read()))
                except (OSError, http.client.HTTPException) as err:
                    load.results.append(no_answer(start, err))
                    conn.close()
                    conn = http.client.HTTPConnection(ip, port, timeout=load.timeout)
        finally:
            conn.close()
        return load.results

    return pod.ns.call(run, timeout=count * load.timeout + 10)
