"""The config store: every object from every source, and who is told when it changes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from istiolite.model.meta import ObjectKey


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """The keys whose object was added, changed or removed in one store update."""

    keys: frozenset[ObjectKey]

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(k.kind for k in self.keys)


Listener = Callable[[ChangeSet], None]


class ConfigStore:
    """Objects grouped by source (a file, a watch); the merged view is what translation reads.

    When two sources define the same object, `winner_of` decides, so the result does not depend
    on the order sources were read: a file (its id is its absolute path) over any other source,
    and of two files the one whose path sorts last, as `kubectl apply -f DIR` applies a
    directory's files in name order and the later file is the one that stays.
    """

    def __init__(self) -> None:
        self._by_source: dict[str, dict[ObjectKey, Any]] = {}
        self._merged: dict[ObjectKey, Any] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def replace_source(self, source: str, objects: Mapping[ObjectKey, Any]) -> ChangeSet:
        """Set all that `source` holds; returns (and announces) what changed in the merged view."""
        old = self._by_source.get(source, {})
        if objects:
            self._by_source[source] = dict(objects)
        else:
            self._by_source.pop(source, None)
        return self._merge(set(old) | set(objects))

    def update_source(
        self, source: str, upserts: Mapping[ObjectKey, Any], deletes: Iterable[ObjectKey]
    ) -> ChangeSet:
        """Add or replace `upserts` and remove `deletes` in what `source` holds, as one update
        (a watch's batch: it costs what it touches, not what the source holds)."""
        held = self._by_source.setdefault(source, {})
        touched: set[ObjectKey] = set()
        for key in deletes:
            if held.pop(key, None) is not None:
                touched.add(key)
        for key, obj in upserts.items():
            held[key] = obj
            touched.add(key)
        if not held:
            del self._by_source[source]
        return self._merge(touched)

    def _merge(self, touched: set[ObjectKey]) -> ChangeSet:
        # Winners first: the first source holding a key is its winner (winner_of).
        sources = [self._by_source[s] for s in sorted(self._by_source, key=_rank, reverse=True)]
        changed: set[ObjectKey] = set()
        for key in touched:
            winner = next((objs[key] for objs in sources if key in objs), None)
            before = self._merged.get(key)
            if winner is None:
                if key in self._merged:
                    del self._merged[key]
                    changed.add(key)
            elif before is None or before != winner:
                self._merged[key] = winner
                changed.add(key)
        result = ChangeSet(frozenset(changed))
        if changed:
            for listener in self._listeners:
                listener(result)
        return result

    def owners(self, key: ObjectKey) -> list[str]:
        return sorted(s for s, objs in self._by_source.items() if key in objs)

    def all_owners(self) -> dict[ObjectKey, list[str]]:
        """`owners` of every key in one pass (not one pass over the sources per key)."""
        out: dict[ObjectKey, list[str]] = {}
        for source in sorted(self._by_source):
            for key in self._by_source[source]:
                out.setdefault(key, []).append(source)
        return out

    def snapshot(self) -> Mapping[ObjectKey, Any]:
        """A read-only copy of the merged view, safe to keep while the store changes."""
        return MappingProxyType(dict(self._merged))


def winner_of(sources: list[str]) -> str:
    """Of the sources defining one object, the one whose definition is used (the same rule in
    serve, render and validate)."""
    return max(sources, key=_rank)


def _rank(source: str) -> tuple[bool, str]:
    return (source.startswith("/"), source)
