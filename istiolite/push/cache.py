"""The cache of generated resources (and of the derived values they are built from), shared by
every proxy and kept across pushes. Each entry declares what it depends on, as istiod's xDS cache
entries declare DependentConfigs: after a change exactly the dependent entries are dropped, and
what was dropped says what the push must send (only EDS entries: an endpoint-only push).

Entries are valid for the context the cache was last advanced to. A context the cache was not
advanced to (a test, `istiolite render`) starts it over: nothing cached is known to hold for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.push.dependencies import ANY, Dep, Recorded, current_recording, record_child
from istiolite.push.errors import GenerationError

T = TypeVar("T")
log = get_logger("generate")

# Kinds read through whole-registry indexes: a change of any of them may change any result built
# from those indexes (which services exist and what they are called, routes, policies, scoping).
STRUCTURAL: frozenset[str] = frozenset(
    {
        "Service",
        "ServiceEntry",
        "VirtualService",
        "DestinationRule",
        "Sidecar",
        "Gateway",
        "Namespace",
        "PeerAuthentication",
        # The Gateway API: converted into Gateways and VirtualServices (model.gatewayapi).
        "GatewayClass",
        "KubernetesGateway",
        "HTTPRoute",
        "GRPCRoute",
        "TLSRoute",
        "TCPRoute",
        "ReferenceGrant",
        # The mesh config's defaults (outboundTrafficPolicy) shape listeners and routes.
        "MeshConfig",
    }
)
# What an endpoint assignment reads besides its endpoints: the service and its subsets.
# PeerAuthentication: a workload whose policy is DISABLE gets no auto-mTLS metadata.
ENDPOINT_KINDS: frozenset[str] = frozenset(
    {"Service", "ServiceEntry", "DestinationRule", "PeerAuthentication"}
)
# Past this many entries the cache starts over (with a full push): a bound whatever the churn.
MAX_ENTRIES = 250_000
_NONE: frozenset[Any] = frozenset()
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Entry:
    value: Any
    type_url: str | None  # the xDS type of a generated resource map or resource; None: derived
    name: str | None  # the one resource this entry is (an EDS cluster), else None
    kinds: frozenset[str]  # one of a few shared sets (STRUCTURAL, ENDPOINT_KINDS, ...)
    deps: Collection[Dep]
    children: Collection[Hashable]  # cached results it was built from
    errors: tuple[GenerationError, ...] = ()  # objects left out of `value` (push.errors)


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What a change dropped: per xDS type, how many entries; and the EDS clusters by name.
    `everything`: the cache started over, so any type may have changed."""

    dropped: Counter[str]
    eds_clusters: frozenset[str]
    everything: bool = False

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self.dropped)


class ResourceCache:
    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: dict[Hashable, Entry] = {}
        # Entries by the set of kinds they declared: few distinct sets, so one index entry each.
        self._by_kinds: dict[frozenset[str], set[Hashable]] = {}
        self._by_dep: dict[Dep, set[Hashable]] = {}
        # child key -> the entries built from it (dropped with it)
        self._parents: dict[Hashable, set[Hashable]] = {}
        # Values derived from the registry-wide indexes only (see `view`).
        self._views: dict[Hashable, Any] = {}
        # Each error of a kept entry, with how many entries carry it (ResourceCache.errors).
        self._errors: Counter[GenerationError] = Counter()
        self._context: object | None = None
        self._max_entries = max_entries
        self._overflowed = False
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def peek(self, key: Hashable) -> Any:
        """An entry's value without building it (None when absent); for tests and debugging."""
        entry = self._entries.get(key)
        return entry.value if entry is not None else None

    def use(self, context: object) -> None:
        """Make the cache serve `context`: kept if it is the one advanced to, else emptied."""
        if context is not self._context:
            self.clear()
            self._context = context

    def clear(self) -> None:
        self._entries.clear()
        self._by_kinds.clear()
        self._by_dep.clear()
        self._parents.clear()
        self._views.clear()
        self._errors.clear()

    def get(
        self,
        key: Hashable,
        build: Callable[[], T],
        *,
        kinds: frozenset[str] = STRUCTURAL,
        type_url: str | None = None,
        name: str | None = None,
    ) -> T:
        """The value for `key`, built (and its reads recorded) when absent. `kinds`: the config
        kinds it reads as a whole; single objects it reads are recorded by the readers."""
        record_child(key)  # the enclosing build (if any) depends on this entry
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            value: T = entry.value
            return value
        self.misses += 1
        value, reads = _recorded(build)
        reads.children.discard(key)
        self._store(
            key,
            Entry(
                value,
                type_url,
                name,
                kinds,
                reads.deps or _NONE,  # never changed again: no copy
                reads.children or _NONE,
                tuple(sorted(reads.errors)),
            ),
        )
        return value

    def view(self, key: Hashable, build: Callable[[], T]) -> T:
        """A value derived from the registry-wide indexes only (STRUCTURAL kinds: which Sidecar
        applies, which services a namespace sees, which clusters a service has): kept until one
        of those kinds changes. Cheaper than an entry (no dependencies to record), so it suits
        the many per-proxy-shape values; the entries built from it declare those kinds
        themselves. Reading a single object (a Pod, a Secret, endpoints) in `build` is a bug."""
        found = self._views.get(key, _MISSING)
        if found is not _MISSING:
            value: T = found
            return value
        value, reads = _recorded(build)
        if reads.deps or reads.children:
            raise AssertionError(
                f"view {key!r} read per-object config: {sorted(map(str, reads.deps))}"
            )
        if reads.errors:
            # Not kept: the entries built from it must carry its errors, so it is rebuilt.
            outer = current_recording.get()
            if outer is not None:
                outer.errors |= reads.errors
            return value
        if len(self._views) >= self._max_entries:
            self._views.clear()  # only costs rebuilding them
        self._views[key] = value
        return value

    def _store(self, key: Hashable, entry: Entry) -> None:
        if len(self._entries) >= self._max_entries:
            self.clear()
            self._overflowed = True
        self._entries[key] = entry
        self._by_kinds.setdefault(entry.kinds, set()).add(key)
        for dep in entry.deps:
            self._by_dep.setdefault(dep, set()).add(key)
        for child in entry.children:
            self._parents.setdefault(child, set()).add(key)
        for error in entry.errors:
            if not self._errors[error]:
                _announce(error)  # once while some kept entry carries it
            self._errors[error] += 1

    def _drop(self, key: Hashable) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        keys = self._by_kinds.get(entry.kinds)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_kinds[entry.kinds]
        for dep in entry.deps:
            keys = self._by_dep.get(dep)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_dep[dep]
        for child in entry.children:
            parents = self._parents.get(child)
            if parents is not None:
                parents.discard(key)
                if not parents:
                    del self._parents[child]
        for error in entry.errors:
            self._errors[error] -= 1
            if self._errors[error] <= 0:
                del self._errors[error]
        return entry

    def errors(self) -> list[GenerationError]:
        """The objects left out of some kept result, because translating them raised: current
        for as long as that result is kept (and so possibly served)."""
        return sorted(self._errors)

    def dependents(self, changed: Iterable[Dep]) -> set[Hashable]:
        """The keys of every entry that depends on one of `changed` (concrete objects)."""
        found: set[Hashable] = set()
        changed = list(changed)
        kinds = {dep.kind for dep in changed}
        for declared, keys in self._by_kinds.items():
            if not kinds.isdisjoint(declared):
                found |= keys
        for dep in changed:
            for pattern in (dep, Dep(dep.kind, dep.namespace, ANY), Dep(dep.kind, ANY, ANY)):
                found |= self._by_dep.get(pattern, set())
        return found

    def serve(self, context: object, generate: Callable[[], T]) -> T:
        """`generate()` for `context`, with `memoized` calls inside using this cache."""
        self.use(context)
        token = _active.set(self)
        try:
            return generate()
        finally:
            _active.reset(token)

    def advance(self, old: object, new: object, changed: Iterable[Dep]) -> Invalidation:
        """Move from context `old` to `new`, which differs from it by `changed`: drop what
        depends on that, keep the rest. If the cache did not serve `old`, it starts over."""
        if self._context is not old or self._overflowed:
            everything = self._overflowed or self._context is not None
            self._overflowed = False
            self.clear()
            self._context = new
            return Invalidation(Counter(), frozenset(), everything=everything)
        changed = list(changed)
        if any(dep.kind in STRUCTURAL for dep in changed):
            self._views.clear()
        dropped: Counter[str] = Counter()
        clusters: set[str] = set()
        stale = self.dependents(changed)
        while stale:
            key = stale.pop()
            entry = self._drop(key)
            if entry is None:
                continue
            stale |= self._parents.pop(key, set())  # built from it: stale too
            if entry.type_url is None:
                continue
            dropped[entry.type_url] += 1
            if entry.name is not None:
                clusters.add(entry.name)
        self._context = new
        return Invalidation(dropped, frozenset(clusters))

    def stats(self) -> dict[str, Any]:
        """Entries per tag (the first element of tuple keys), and hit counts."""
        tags = Counter(
            str(key[0]) if isinstance(key, tuple) and key else "other" for key in self._entries
        )
        return {
            "entries": len(self._entries),
            "views": len(self._views),
            "by_tag": dict(sorted(tags.items())),
            "hits": self.hits,
            "misses": self.misses,
        }


def _announce(error: GenerationError) -> None:
    metrics.GENERATION_ERRORS.inc(error.kind)
    log.error(
        "config object left out of generated config",
        object=error.object,
        field=error.field,
        error=error.message,
        dropped=error.dropped,
    )


_active: ContextVar[ResourceCache | None] = ContextVar("istiolite_cache", default=None)


def active_cache() -> ResourceCache | None:
    """The cache of the generation in progress, if any."""
    return _active.get()


def memoized(key: Hashable, build: Callable[[], T]) -> T:
    """A value derived from the registry-wide indexes, shared by the proxies a generator serves
    (ResourceCache.view); outside a generator, simply built."""
    cache = _active.get()
    if cache is None:
        return build()
    return cache.view(key, build)


def _recorded(build: Callable[[], T]) -> tuple[T, Recorded]:
    """`build()` and what it read (its own recording, not the enclosing build's)."""
    reads = Recorded()
    token = current_recording.set(reads)
    try:
        value = build()
    except BaseException:
        current_recording.reset(token)
        # Whatever catches this (generation's per-object guard) built its result from what was
        # read so far: that result must be dropped when any of it changes.
        outer = current_recording.get()
        if outer is not None:
            outer.deps |= reads.deps
            outer.children |= reads.children
            outer.errors |= reads.errors
        raise
    current_recording.reset(token)
    return value, reads
