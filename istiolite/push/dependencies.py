"""What a cached result depends on: config kinds as a whole, and single objects read while
building it (recorded as they are read, so a dependency cannot be forgotten by hand).

A `Dep` names the config that, when changed, makes a result stale: one object (kind, namespace,
name), every object of a kind in a namespace (name `ANY`), or the endpoints of a Service (kind
`SERVICE_ENDPOINTS`: its EndpointSlices, whatever their own names). ResourceCache.get sets
`current_recording` while it builds an entry; the PushContext's readers of Pods, Nodes,
Secrets, WorkloadEntries and EndpointSlices call `record()`. Kinds read through whole-registry
indexes (Services, VirtualServices, ...) are declared by the cache entry instead (see
cache.STRUCTURAL).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from istiolite.model.meta import ObjectKey

ANY = "*"
# The endpoints of Service (namespace, name): its EndpointSlices.
SERVICE_ENDPOINTS = "ServiceEndpoints"
# The identities (service accounts) of a Service's endpoints: changes only when that set does,
# so the clusters verifying them are not rebuilt by every endpoint change (push.identities).
SERVICE_ACCOUNTS = "ServiceAccounts"


@dataclass(frozen=True, slots=True)
class Dep:
    kind: str
    namespace: str = ANY
    name: str = ANY

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(slots=True)
class Recorded:
    """What one build read: single objects, and other cached results (by key: when one of
    those is dropped, so is this). Whole kinds are declared by the cache entry."""

    deps: set[Dep] = field(default_factory=set)
    children: set[Hashable] = field(default_factory=set)
    # push.errors.GenerationError: objects left out of the result because translating them raised
    errors: set[Any] = field(default_factory=set)


# The recording of the build in progress (set by ResourceCache.get).
current_recording: ContextVar[Recorded | None] = ContextVar("istiolite_recording", default=None)


def record(kind: str, namespace: str = ANY, name: str = ANY) -> None:
    """Note that the build in progress (if any) read this object (ANY: every such object)."""
    found = current_recording.get()
    if found is not None:
        found.deps.add(Dep(kind, namespace, name))


@contextmanager
def unrecorded() -> Iterator[None]:
    """Reads inside are not recorded: for a value whose own, narrower dependency the caller
    records instead (SERVICE_ACCOUNTS)."""
    token = current_recording.set(None)
    try:
        yield
    finally:
        current_recording.reset(token)


def record_child(key: Hashable) -> None:
    """Note that the build in progress (if any) used the cached result `key`."""
    found = current_recording.get()
    if found is not None:
        found.children.add(key)


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
