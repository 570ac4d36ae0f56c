"""Status of the Gateway API objects istiolite handles, written by the leader: what
`PushContext.gateway_api_status()` computes (a pure function of the config), put on each
object's /status subresource only when it differs from what the object carries, timestamps
aside. Only istiolite's part is written (gateway_api_ownership.py: a route's parents entries of
other controllers are kept), read-modify-write with the resourceVersion read and a retry on 409.
Each condition's `lastTransitionTime` is kept while its status stays the same."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from istiolite import metrics
from istiolite.logs import get_logger
from istiolite.model.gatewayapi.convert import ROUTE_KINDS
from istiolite.model.meta import ObjectKey
from istiolite.operator.gateway_api_ownership import (
    class_is_ours,
    observed_generation,
    our_parents,
    owned_status,
    ref_key,
)
from istiolite.operator.workqueue import WorkQueue
from istiolite.sources.kube.errors import Conflict, NotFound
from istiolite.sources.kube.refs import ObjectRef
from istiolite.sources.kube.resources import WATCHED

log = get_logger("gateway-api-status")
WORKERS = 4
MAX_ATTEMPTS = 5  # writes per reconcile that may meet a concurrent change (409)


class StatusConflict(Exception):
    """Every attempt met a newer version of the object: the work queue retries later."""


def _conditions_by_type(conditions: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(conditions, list):
        return {}
    return {str(c.get("type")): c for c in conditions if isinstance(c, dict)}


def _stamp(conditions: list[dict[str, Any]], before: Any, now: str) -> list[dict[str, Any]]:
    old = _conditions_by_type(before)
    out = []
    for c in conditions:
        prior = old.get(c["type"])
        kept = prior.get("lastTransitionTime") if prior else None
        same = prior is not None and prior.get("status") == c["status"]
        out.append({**c, "lastTransitionTime": kept if same and kept else now})
    return out


def with_times(desired: dict[str, Any], current: Mapping[str, Any], now: str) -> dict[str, Any]:
    """`desired` with every condition (of the object, its listeners, its parents) stamped."""
    out = dict(desired)
    if "conditions" in desired:
        out["conditions"] = _stamp(desired["conditions"], current.get("conditions"), now)
    for field, key in (("listeners", "name"), ("parents", "parentRef")):
        if field not in desired:
            continue
        found = current.get(field)
        existing: list[Any] = found if isinstance(found, list) else []
        by_key = {ref_key(e.get(key)): e for e in existing if isinstance(e, dict)}
        out[field] = [
            {
                **item,
                "conditions": _stamp(
                    item["conditions"], by_key.get(ref_key(item[key]), {}).get("conditions"), now
                ),
            }
            for item in desired[field]
        ]
    return out


class GatewayApiStatusApi(Protocol):
    async def get(self, ref: ObjectRef, *, subresource: str = "") -> dict[str, Any]: ...

    async def replace(
        self, ref: ObjectRef, obj: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]: ...


class GatewayApiStatusWriter:
    """Keys in (`changed`, e.g. after every push); `run()` while leader writes what differs."""

    def __init__(
        self,
        api: GatewayApiStatusApi,
        statuses: Callable[[], Mapping[ObjectKey, dict[str, Any]]],
        *,
        workers: int = WORKERS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        addresses: Callable[[ObjectKey], list[dict[str, str]] | None] | None = None,
    ) -> None:
        self._api = api
        self._statuses = statuses
        # A Gateway's status.addresses, from the Service the gateway deployment made for it.
        self._addresses = addresses
        self._workers = workers
        self._now = now
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self._known: dict[ObjectKey, Any] = {}  # what is known to be on each object
        self.writes = 0

    def changed(self, keys: frozenset[ObjectKey] | None = None) -> None:
        """Queue `keys` (all objects with a status when None)."""
        # All: also those written before that have no status now (a route no longer ours).
        for key in keys if keys is not None else frozenset(self._statuses()) | set(self._known):
            self.queue.add(key)

    async def run(self) -> None:
        self.changed()
        await self.queue.run(self.reconcile, self._workers)

    async def reconcile(self, key: ObjectKey) -> None:
        desired = self._statuses().get(key)
        kind = WATCHED.get(key.kind)
        withdraw = desired is None and key in self._known and key.kind in ROUTE_KINDS
        if kind is None or (desired is None and not withdraw):
            self._known.pop(key, None)
            return
        if desired is None:
            desired = {"parents": []}  # none of its parents is ours now: drop our entries only
        addresses = self._addresses(key) if self._addresses is not None else None
        if addresses is not None:
            desired = {**desired, "addresses": addresses}
        if self._known.get(key) == desired:
            return
        ref = ObjectRef(
            f"{kind.group}/{kind.versions[0]}",
            kind.api_kind or kind.kind,
            kind.plural,
            key.namespace,
            key.name,
        )
        # Read, merge into what is there, write with the resourceVersion read: a concurrent
        # writer's change (another controller's parents entry) makes the write a 409, and the
        # next attempt merges into it instead of losing it.
        for _ in range(MAX_ATTEMPTS):
            try:
                current = await self._api.get(ref)
            except NotFound:
                self._known.pop(key, None)  # deleted: nothing of ours left on it
                return
            if not self._may_write(key, current, desired):
                return
            raw = current.get("status")
            existing: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
            now = self._now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            status = owned_status(with_times(desired, our_parents(existing), now), existing)
            if status is None:
                break
            try:
                await self._api.replace(ref, {**current, "status": status}, subresource="status")
            except NotFound:
                return
            except Conflict:
                metrics.OPERATOR_WRITES.inc(key.kind, "conflict")
                continue
            except Exception:
                metrics.OPERATOR_WRITES.inc(key.kind, "error")
                raise
            metrics.OPERATOR_WRITES.inc(key.kind, "ok")
            self.writes += 1
            log.info("status written", object=str(key))
            break
        else:
            raise StatusConflict(f"{key}: status changed under every one of {MAX_ATTEMPTS} writes")
        if withdraw:
            self._known.pop(key, None)
        else:
            self._known[key] = desired

    @staticmethod
    def _may_write(key: ObjectKey, current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
        """Not a GatewayClass of another controller, nor an object whose spec changed since the
        status was computed (its own event brings the status of that generation)."""
        if key.kind == "GatewayClass" and not class_is_ours(current):
            return False
        meta = current.get("metadata")
        generation = meta.get("generation") if isinstance(meta, dict) else None
        observed = observed_generation(desired)
        return not (isinstance(generation, int) and observed is not None and generation != observed)
