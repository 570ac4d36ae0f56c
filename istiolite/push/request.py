"""What a push is about: everything, or only the endpoints of some clusters."""

from __future__ import annotations

from dataclasses import dataclass

from istiolite.model.proxy import Proxy


@dataclass(frozen=True, slots=True)
class PushRequest:
    """`full`: any type may have changed. Otherwise only the ClusterLoadAssignments named in
    `eds_clusters`, except for the proxies of the Pods in `full_for` ("namespace/name"): what a
    proxy gets depends on its own Pod (labels, locality, named ports), so a change of that Pod is
    a full push for it. `started` is when the first change behind this push was seen
    (monotonic)."""

    full: bool
    eds_clusters: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    started: float = 0.0
    full_for: frozenset[str] = frozenset()

    def for_proxy(self, proxy: Proxy | None) -> PushRequest:
        """This request as it applies to one proxy (None: not identified yet)."""
        if self.full or not self.full_for or proxy is None:
            return self
        if f"{proxy.namespace}/{proxy.pod_name}" not in self.full_for:
            return self
        return PushRequest(full=True, reasons=self.reasons, started=self.started)

    def merge(self, other: PushRequest) -> PushRequest:
        """Two pending pushes for one proxy become one that covers both."""
        full = self.full or other.full
        return PushRequest(
            full=full,
            eds_clusters=frozenset() if full else self.eds_clusters | other.eds_clusters,
            reasons=self.reasons | other.reasons,
            started=min(self.started, other.started),
            full_for=frozenset() if full else self.full_for | other.full_for,
        )


FULL_PUSH = PushRequest(full=True)
