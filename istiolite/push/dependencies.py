"""What a cached result depends on: config kinds as a whole, and single objects read while
building it (recorded as they are read, so a dependency cannot be forgotten by hand).

A `Dep` names the config that, when changed, makes a result stale: one object (kind, namespace,
name), every object of a kind in a namespace (name `ANY`), or the endpoints of a Service (kind
`SERVICE_ENDPOINTS`: its EndpointSlices, whatever their own names). Builds run inside `recording()`;
the PushContext's readers of Pods, Nodes, Secrets, WorkloadEntries and EndpointSlices call
`record()`. Kinds read through whole-registry indexes (Services, VirtualServices, ...) are declared
by the cache entry instead (see cache.STRUCTURAL).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from istiolite.model.meta import ObjectKey

ANY = "*"
# The endpoints of Service (namespace, name): its EndpointSlices.
SERVICE_ENDPOINTS = "ServiceEndpoints"


@dataclass(frozen=True, slots=True)
class Dep:
    kind: str
    namespace: str = ANY
    name: str = ANY

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(slots=True)
class Recorded:
    """What one build read: whole kinds, and single objects."""

    kinds: set[str] = field(default_factory=set)
    deps: set[Dep] = field(default_factory=set)

    def add(self, kinds: Iterable[str], deps: Iterable[Dep]) -> None:
        self.kinds.update(kinds)
        self.deps.update(deps)


_current: ContextVar[Recorded | None] = ContextVar("istiolite_recording", default=None)


def record(dep: Dep) -> None:
    """Note that the build in progress (if any) read `dep`."""
    found = _current.get()
    if found is not None:
        found.deps.add(dep)


def record_all(kinds: Iterable[str], deps: Iterable[Dep]) -> None:
    """Note a nested result's dependencies in the enclosing build (if any)."""
    found = _current.get()
    if found is not None:
        found.add(kinds, deps)


@contextlib.contextmanager
def recording() -> Iterator[Recorded]:
    """Collect what the code inside reads; nested recordings also report to the outer one."""
    outer = _current.get()
    mine = Recorded()
    token = _current.set(mine)
    try:
        yield mine
    finally:
        _current.reset(token)
        if outer is not None:
            outer.add(mine.kinds, mine.deps)


def changed_deps(
    keys: Iterable[ObjectKey], old: Mapping[ObjectKey, Any], new: Mapping[ObjectKey, Any]
) -> set[Dep]:
    """The dependencies a set of changed store keys makes stale. An EndpointSlice change is a
    change of its Service's endpoints (before and after: a slice may move between Services)."""
    out: set[Dep] = set()
    for key in keys:
        out.add(Dep(key.kind, key.namespace, key.name))
        if key.kind == "EndpointSlice":
            for snapshot in (old, new):
                obj = snapshot.get(key)
                if obj is not None:
                    out.add(Dep(SERVICE_ENDPOINTS, key.namespace, obj.service_name))
    return out
