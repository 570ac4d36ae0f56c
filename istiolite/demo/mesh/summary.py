"""The demo's live view: one line per service from its pods' sidecars (requests per second,
errors, p50/p99 of the inbound request time, the share each version served) and one for the
client's own traffic, computed from Envoy's stats between two looks."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from istiolite.demo.mesh.cluster import Mesh, Pod
from istiolite.demo.mesh.load import Load

INBOUND = "http.inbound_0.0.0.0_{port}."


@dataclass
class Summary:
    mesh: Mesh
    load: Load | None = None
    _last: dict[str, Counter[str]] = field(default_factory=dict)
    _last_at: float = 0.0
    _last_statuses: Counter[int] = field(default_factory=Counter)

    def _pods(self, service: str) -> list[Pod]:
        return [
            p for p in self.mesh.pods.values() if p.spec.service == service and p.envoy is not None
        ]

    def lines(self) -> list[str]:
        now = time.monotonic()
        elapsed = max(0.001, now - self._last_at) if self._last_at else 0.0
        out = []
        for service, spec in sorted(self.mesh.services.items()):
            prefix = INBOUND.format(port=spec.port)
            requests = errors = 0
            per_version: Counter[str] = Counter()
            p50s: list[float] = []
            p99s: list[float] = []
            for pod in self._pods(service):
                try:
                    stats = pod.stats()
                    quantiles = pod.histograms(prefix + "downstream_rq_time")
                except (OSError, ValueError):
                    continue
                before = self._last.get(pod.name, Counter())
                self._last[pod.name] = stats
                done = (
                    stats[prefix + "downstream_rq_total"] - before[prefix + "downstream_rq_total"]
                )
                failed = sum(
                    stats[prefix + f"downstream_rq_{c}xx"] - before[prefix + f"downstream_rq_{c}xx"]
                    for c in (4, 5)
                )
                requests += done
                errors += failed
                per_version[pod.spec.version] += done
                for values in quantiles.values():
                    if values.get("p50") is not None and done:
                        p50s.append(float(values["p50"] or 0))
                        p99s.append(float(values.get("p99") or 0))
            if not elapsed:
                continue
            split = " ".join(
                f"{v} {100 * n / requests:.0f}%" for v, n in sorted(per_version.items()) if requests
            )
            latency = (
                f"p50 {max(p50s):5.1f}ms p99 {max(p99s):6.1f}ms" if p50s else "p50    - p99     -"
            )
            out.append(
                f"  {service:12} {requests / elapsed:7.1f} rq/s  errors {errors:4}  {latency}"
                f"  {split}"
            )
        if self.load is not None and elapsed:
            statuses = self.load.statuses.copy()
            delta = statuses - self._last_statuses
            self._last_statuses = statuses
            shown = ", ".join(f"HTTP {code or 'none'}: {n}" for code, n in sorted(delta.items()))
            out.append(f"  client sleep → productpage: {shown or 'no requests'}")
        self._last_at = now
        return out
