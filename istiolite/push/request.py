"""What a push is about: everything, or only the endpoints of some clusters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PushRequest:
    """`full`: any type may have changed. Otherwise only the ClusterLoadAssignments named in
    `eds_clusters`. `started` is when the first change behind this push was seen (monotonic)."""

    full: bool
    eds_clusters: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    started: float = 0.0

    def merge(self, other: PushRequest) -> PushRequest:
        """Two pending pushes for one proxy become one that covers both."""
        full = self.full or other.full
        return PushRequest(
            full=full,
            eds_clusters=frozenset() if full else self.eds_clusters | other.eds_clusters,
            reasons=self.reasons | other.reasons,
            started=min(self.started, other.started),
        )


FULL_PUSH = PushRequest(full=True)
