"""The Pusher: turns a batch of config changes into a new PushContext and a PushRequest.

It owns the decision "what does this change need". Nothing here knows which resources read
what: the generated-resource cache knows (each entry recorded its dependencies while it was
built), so the Pusher drops the entries the change makes stale and reads the answer off what was
dropped — only endpoint assignments: an EDS push of those clusters; anything else: a full push
(in which every proxy regenerates, reusing every entry that was kept, and receives only what
differs from what it has).
"""

from __future__ import annotations

import datetime
import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

from istiolite import metrics, type_urls
from istiolite.logs import get_logger
from istiolite.model.meta import ObjectKey
from istiolite.model.store import ChangeSet, ConfigStore
from istiolite.push.cache import Invalidation, ResourceCache
from istiolite.push.context import ConfigWarning, PushContext
from istiolite.push.dependencies import changed_deps
from istiolite.push.identities import identity_deps
from istiolite.push.request import PushRequest

log = get_logger("push")

# A proxy's own Node decides its locality, read before any cached build (to pick the locality
# variant), so no entry records it: a Node change is a full push.
_FULL_PUSH_KINDS = frozenset({"Node"})
# Kinds whose change cannot alter a warning (reference_warnings reads no endpoints).
_NO_WARNING_KINDS = frozenset({"EndpointSlice"})

Publish = Callable[[PushContext, PushRequest], None]


class Pusher:
    """Builds one immutable PushContext per batch of changes, advances the resource cache to it,
    decides the PushRequest and hands both to `publish` (the xDS server). Keeps the push status
    and the config warnings that the debug pages show."""

    def __init__(
        self,
        store: ConfigStore,
        cache: ResourceCache,
        *,
        domain: str,
        publish: Publish,
        trust_domain: str = "",
        connected: Callable[[], int] = lambda: 0,
    ) -> None:
        self._store = store
        self._cache = cache
        self._domain = domain
        self._trust_domain = trust_domain
        self._publish = publish
        self._connected = connected
        self._versions = itertools.count(1)
        self._snapshot: Mapping[ObjectKey, Any] = store.snapshot()
        self.context = self._build(self._snapshot)
        self.status: dict[str, Any] = {}
        self.warnings: list[ConfigWarning] = []

    def _version(self) -> str:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{stamp}/{next(self._versions)}"

    def _build(self, snapshot: Mapping[ObjectKey, Any]) -> PushContext:
        return PushContext(
            snapshot, domain=self._domain, version=self._version(), trust_domain=self._trust_domain
        )

    def start(self) -> PushContext:
        """The startup push: everything the store holds now."""
        old = self.context
        self._snapshot = self._store.snapshot()
        self.context = self._build(self._snapshot)
        self._cache.advance(old, self.context, ())
        self._cache.clear()
        self._update_warnings()
        self._publish(self.context, PushRequest(full=True, reasons=frozenset({"startup"})))
        self.status = {
            "version": self.context.version,
            "full": True,
            "reason": ["startup"],
            "time": _now(),
            "services": len(self.context.services),
            "proxies": self._connected(),
        }
        return self.context

    def push(self, batch: list[tuple[float, ChangeSet]]) -> PushRequest:
        """One push for a debounced batch of (first seen, changes)."""
        first_seen = min(seen for seen, _ in batch)
        keys = {key for _, changes in batch for key in changes.keys}
        kinds = sorted({key.kind for key in keys})
        metrics.DEBOUNCE.observe(time.monotonic() - first_seen)
        started = time.perf_counter()
        old_ctx, old_snapshot = self.context, self._snapshot
        snapshot = self._store.snapshot()
        ctx = old_ctx.derive(snapshot, keys, old_snapshot, version=self._version())
        deps = changed_deps(keys, old_snapshot, snapshot)
        if ctx.services is old_ctx.services:  # derived: only endpoints and the like changed
            deps |= identity_deps(old_ctx, ctx, keys, old_snapshot, snapshot)
        invalidation = self._cache.advance(old_ctx, ctx, deps)
        request = decide(keys, invalidation, started=first_seen)
        build_seconds = time.perf_counter() - started
        metrics.CONTEXT_INIT.observe(build_seconds)
        for kind in kinds:
            metrics.PUSH_TRIGGERS.inc(kind)
        for type_url, count in invalidation.dropped.items():
            metrics.CACHE_DROPPED.inc(type_urls.short_name(type_url).lower(), amount=count)
        metrics.CACHE_ENTRIES.set(len(self._cache))
        self.context, self._snapshot = ctx, snapshot
        if set(kinds) - _NO_WARNING_KINDS:
            self._update_warnings()
        self._publish(ctx, request)
        changed = sorted(str(k) for k in keys)
        self.status = {
            "version": ctx.version,
            "full": request.full,
            "reason": kinds,
            "changed": changed[:100],
            "changed_count": len(changed),
            "eds_clusters": sorted(request.eds_clusters),
            "dropped": {type_urls.short_name(t): n for t, n in invalidation.dropped.items()},
            "time": _now(),
            "context_build_seconds": round(build_seconds, 6),
            "proxies": self._connected(),
            "services": len(ctx.services),
            "cache_entries": len(self._cache),
        }
        log.info(
            "push",
            version=ctx.version,
            full=request.full,
            reason=kinds,
            changed=changed[:20],
            changed_count=len(changed),
            eds_clusters=len(request.eds_clusters),
            proxies=self.status["proxies"],
            services=len(ctx.services),
        )
        return request

    def _update_warnings(self) -> None:
        warnings = self.context.reference_warnings()
        for warning in warnings:
            if warning not in self.warnings:
                log.warning(
                    "config setting not applied"
                    if warning.unapplied
                    else "config refers to something missing",
                    object=warning.object,
                    field=warning.field,
                    message=warning.message,
                )
        self.warnings = warnings


def decide(keys: set[ObjectKey], dropped: Invalidation, *, started: float = 0.0) -> PushRequest:
    """What a change needs, from what it made stale in the cache: when only endpoint
    assignments, an EDS push of those clusters (and a full one for the proxies of changed Pods,
    whose own config reads their Pod); else a full push."""
    reasons = frozenset(key.kind for key in keys)
    if (
        dropped.everything
        or reasons & _FULL_PUSH_KINDS
        or any(t != type_urls.ENDPOINT for t in dropped.types)
    ):
        return PushRequest(full=True, reasons=reasons, started=started)
    pods = frozenset(f"{k.namespace}/{k.name}" for k in keys if k.kind == "Pod")
    return PushRequest(
        full=False,
        eds_clusters=dropped.eds_clusters,
        reasons=reasons,
        started=started,
        full_for=pods,
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()
